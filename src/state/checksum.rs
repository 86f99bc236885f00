//! The checksum the files ledger keeps of each data file (`files.checksum`): xxh3-128 of the
//! file's bytes as they are on disk (compressed, for `.jsonl.gz`), written as 32 lowercase hex
//! digits. The sinks hash the bytes as they write them ([`Hasher`], fed by the writer that
//! counts them); `verify` hashes the file again ([`of_file`]) and compares.
//!
//! xxh3 is not a cryptographic hash: it proves a file is the one committed against accidents
//! (a rewrite, bit rot, a copy over it), not against someone forging a file to match.

use std::io::Read;
use std::path::Path;

use xxhash_rust::xxh3::Xxh3Default;

/// An xxh3-128 hash being fed.
#[derive(Clone, Default)]
pub struct Hasher(Xxh3Default);

impl Hasher {
    /// A hash of nothing yet.
    pub fn new() -> Self {
        Hasher(Xxh3Default::new())
    }

    /// Feeds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The checksum of the bytes fed, as the ledger writes it.
    pub fn hex(&self) -> String {
        hex(self.0.digest128())
    }
}

/// A 128-bit hash as 32 lowercase hex digits.
fn hex(h: u128) -> String {
    format!("{h:032x}")
}

/// The checksum of `bytes`.
pub fn of_bytes(bytes: &[u8]) -> String {
    hex(xxhash_rust::xxh3::xxh3_128(bytes))
}

/// The checksum of a file, read in 256 KiB pieces (memory does not grow with the file).
///
/// # Errors
/// I/O errors opening or reading it.
pub fn of_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match f.read(&mut buf) {
            Ok(0) => return Ok(h.hex()),
            Ok(n) => h.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_pieces_file_and_bytes_agree() {
        // More than one read buffer, not a multiple of it.
        let data: Vec<u8> = (0..700_001u32).map(|i| (i * 31 % 251) as u8).collect();
        let mut h = Hasher::new();
        for piece in data.chunks(4093) {
            h.update(piece);
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, &data).unwrap();
        assert_eq!(h.hex(), of_bytes(&data));
        assert_eq!(of_file(&p).unwrap(), of_bytes(&data));
        assert_eq!(of_bytes(&data).len(), 32);
        assert_eq!(of_bytes(b""), hex(xxhash_rust::xxh3::xxh3_128(b"")));
        let mut other = data.clone();
        other[350_000] ^= 1;
        assert_ne!(of_bytes(&other), of_bytes(&data));
    }
}
