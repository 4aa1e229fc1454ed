//! Sprig's deterministic cryptography: `decryptAES` (AES-256-CBC, the
//! key the password's first 32 bytes, zero-padded; the IV the first
//! block; the padding the last byte's count, unchecked, as Sprig does).

use aes::Aes256;
use aes::cipher::generic_array::GenericArray;
use aes::cipher::{BlockDecrypt, KeyInit};
use base64::Engine as _;

use super::super::model::Go;
use super::conv::{Out, charge, string, text};

/// Sprig's `decryptAES password crypt64`.
fn decrypt(password: &[u8], crypt64: &[u8]) -> Out {
    if crypt64.is_empty() {
        return Ok(text(b""));
    }
    let mut key = [0u8; 32];
    let n = password.len().min(32);
    key[..n].copy_from_slice(&password[..n]);
    let cleaned: Vec<u8> = crypt64
        .iter()
        .copied()
        .filter(|b| !matches!(b, b'\r' | b'\n'))
        .collect();
    let crypt = base64::engine::general_purpose::STANDARD
        .decode(&cleaned)
        .map_err(|e| e.to_string())?;
    charge(crypt.len() * 4)?;
    // Where Go panics (text/template reports the panic as an error).
    if crypt.len() < 16 {
        return Err("runtime error: slice bounds out of range".to_owned());
    }
    let (iv, body) = crypt.split_at(16);
    if body.len() % 16 != 0 {
        return Err("crypto/cipher: input not full blocks".to_owned());
    }
    let cipher = Aes256::new(GenericArray::from_slice(&key));
    let mut previous: [u8; 16] = iv.try_into().unwrap_or([0; 16]);
    let mut plain = Vec::with_capacity(body.len());
    for chunk in body.chunks(16) {
        let mut block = GenericArray::clone_from_slice(chunk);
        cipher.decrypt_block(&mut block);
        plain.extend(block.iter().zip(previous).map(|(b, p)| b ^ p));
        previous.copy_from_slice(chunk);
    }
    let pad = usize::from(
        *plain
            .last()
            .ok_or("runtime error: index out of range [-1]")?,
    );
    let end = plain
        .len()
        .checked_sub(pad)
        .ok_or("runtime error: slice bounds out of range")?;
    Ok(text(&plain[..end]))
}

/// The functions of this file; `None` for a name it does not have.
pub(super) fn call(name: &str, args: &[Go<'_>]) -> Option<Out> {
    match (name, args) {
        ("sprig_decryptAES", [password, crypt]) => {
            Some(string(password).and_then(|p| string(crypt).and_then(|c| decrypt(&p, &c))))
        }
        ("sprig_decryptAES", _) => Some(Err(format!("wrong number of args for {name}"))),
        _ => None,
    }
}
