//! A hash whose value never changes between builds or platforms (FNV-1a, 64 bit), for keys that
//! are written to disk: checkpoint fingerprints, embedding-cache file names. `std`'s hashers may
//! change from one Rust release to the next.

pub struct Fingerprint(u64);

impl Default for Fingerprint {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fingerprint {
    pub fn write(&mut self, bytes: &[u8]) -> &mut Self {
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
        self
    }

    /// Writes a text followed by a separator, so `["ab", "c"]` and `["a", "bc"]` differ.
    pub fn text(&mut self, text: &str) -> &mut Self {
        self.write(text.as_bytes()).write(&[0])
    }

    pub fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_value_and_separation() {
        // FNV-1a 64 of "a" is a published test vector.
        assert_eq!(Fingerprint::default().write(b"a").hex(), "af63dc4c8601ec8c");
        let mut x = Fingerprint::default();
        x.text("ab").text("c");
        let mut y = Fingerprint::default();
        y.text("a").text("bc");
        assert_ne!(x.hex(), y.hex());
    }
}
