//! The standalone binary: what it prints, where, for the shell.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

/// Standard output carries only `NAME=value` lines a shell can `eval`
/// (`VAULT_ADDR`, then `SA_JWT` with `--print-jwt`); the line for people
/// goes to standard error.
#[test]
fn standard_output_is_only_shell_assignments() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vault-double"))
        .args(["--listen=127.0.0.1:0", "--seed=walkthrough", "--print-jwt"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start vault-double");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    for _ in 0..2 {
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .expect("read vault-double's output");
        lines.push(line.trim_end().to_owned());
    }
    child.kill().expect("stop vault-double");
    child.wait().expect("reap vault-double");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();

    let names: Vec<&str> = lines
        .iter()
        .map(|line| {
            let (name, value) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("{line:?} is not NAME=value"));
            assert!(
                !value.is_empty() && !value.contains(char::is_whitespace),
                "{line:?} needs no quoting"
            );
            name
        })
        .collect();
    assert_eq!(names, ["VAULT_ADDR", "SA_JWT"], "{lines:?}");
    assert!(
        stderr.starts_with("vault-double listening on http://127.0.0.1:"),
        "{stderr}"
    );
}
