//! `template_render`: template text from a pod spec → `Renderer::compile`
//! (parse, then the lenient pass that collects `secret` calls), then
//! `render()` with no secrets fetched.
//!
//! Runs on a thread with a 2 MiB stack, a quarter of the driver's render
//! threads (8 MiB), so a template that nests deep enough to come near the
//! driver's stack overflows here first. The seeds spell partials,
//! decorators and inline partials with `~`, whitespace, triple braces, raw
//! blocks and escapes: the renderer must refuse every one it would render
//! (a recursive pair used to overflow the stack).
//!
//! Never panics. If the lenient pass found a `secret` call, the strict
//! render without any secret must fail (never render a file without the
//! data it asked for); a successful render yields exactly the one file.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use vault_csi_driver::render::{Rendered, Renderer};
use vault_csi_driver::storage::RelativePath;

/// A quarter of the driver's render-thread stack.
const STACK_BYTES: usize = 2 * 1024 * 1024;

fn run(text: String) {
    let renderer = Renderer::new();
    let file = RelativePath::parse("f").unwrap();
    let Ok(templates) = renderer.compile(&[(file.clone(), text)]) else {
        return;
    };
    let rendered = renderer.render(&templates, HashMap::new());
    if !templates.requests().is_empty() {
        assert!(
            rendered.is_err(),
            "rendered without the {} secret(s) the templates read",
            templates.requests().len()
        );
    }
    match rendered {
        Ok(Rendered::Files(files)) => {
            assert_eq!(
                files.len(),
                1,
                "one template rendered into {} files",
                files.len()
            );
            assert_eq!(files[0].0, file);
        }
        Ok(Rendered::NeedsSecrets(missing)) => assert!(!missing.is_empty()),
        Err(_) => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let text = text.to_owned();
    let worker = std::thread::Builder::new()
        .name("render".to_owned())
        .stack_size(STACK_BYTES)
        .spawn(move || run(text))
        .expect("spawn the render thread");
    if worker.join().is_err() {
        // The panic message and stack were printed by the thread; make
        // libFuzzer record the input.
        std::process::abort();
    }
});
