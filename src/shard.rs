//! Sharded workers: which users one of N workers exports.
//!
//! A user belongs to shard `xxh3_64(channel_user_id) mod N`: XXH3, 64-bit, seed 0, over the
//! id's UTF-8 bytes, as an unsigned integer, modulo the number of shards. The rule is fixed
//! (a golden test pins it), so with the same N a user always falls in the same shard, whoever
//! computes it: in Python, `xxhash.xxh3_64_intdigest(id.encode()) % N`. Changing N moves
//! users between shards; each shard keeps its own state (namespace and state directory carry
//! the shard), so a new N starts from fresh state.
//!
//! A sharded run tags what it writes into a shared output with [`Shard::tag`] (`s<I>of<N>`):
//! its unit keys (and so every data file name), its `users` table file, its run report and
//! its staged files, so that N workers writing one output never take each other's names or
//! clean up each other's files.

/// The largest number of shards.
pub const MAX_SHARDS: u32 = 65_536;

/// Shard `index` of `count` (0-based: `0/4` .. `3/4`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shard {
    /// This worker's shard, `0..count`.
    pub index: u32,
    /// Number of shards, `2..=MAX_SHARDS` (one shard is an unsharded run).
    pub count: u32,
}

/// The shard of a channel-user id among `count` shards: `xxh3_64(id) mod count` (module docs).
/// `count` 0 is taken as 1.
pub fn shard_of(channel_user_id: &str, count: u32) -> u32 {
    let n = u64::from(count.max(1));
    (xxhash_rust::xxh3::xxh3_64(channel_user_id.as_bytes()) % n) as u32
}

impl Shard {
    /// A shard, checked: `index < count <= MAX_SHARDS`. `None` for one shard (`0/1`: the whole
    /// run).
    ///
    /// # Errors
    /// What is wrong, for the key or flag named by the caller.
    pub fn new(index: u32, count: u32) -> Result<Option<Shard>, String> {
        if count == 0 || count > MAX_SHARDS {
            return Err(format!(
                "the number of shards must be between 1 and {MAX_SHARDS}, not {count}"
            ));
        }
        if index >= count {
            return Err(format!(
                "shard index {index} is out of range for {count} shards (0 to {})",
                count - 1
            ));
        }
        Ok((count > 1).then_some(Shard { index, count }))
    }

    /// Parses `I/N` (e.g. `0/4`); `None` for `0/1`.
    ///
    /// # Errors
    /// What is wrong with the text.
    pub fn parse(text: &str) -> Result<Option<Shard>, String> {
        let bad = || format!("`{text}` is not a shard: write I/N, e.g. 0/4 (I from 0 to N-1)");
        let (i, n) = text.trim().split_once('/').ok_or_else(bad)?;
        let index = i.trim().parse::<u32>().map_err(|_| bad())?;
        let count = n.trim().parse::<u32>().map_err(|_| bad())?;
        Shard::new(index, count)
    }

    /// True when the user belongs to this shard.
    pub fn contains(&self, channel_user_id: &str) -> bool {
        shard_of(channel_user_id, self.count) == self.index
    }

    /// `s<I>of<N>`: the tag in the names of what this shard writes into a shared output, its
    /// state directory and its state namespace.
    pub fn tag(&self) -> String {
        format!("s{}of{}", self.index, self.count)
    }

    /// The shard whose tag is a token of `name` (tokens are split at `-`, `.`, `/` and `@`), if any:
    /// which shard a staged file or a state directory belongs to.
    pub fn tag_in(name: &str) -> Option<Shard> {
        name.split(['-', '.', '/', '@']).find_map(parse_tag)
    }
}

/// `s<I>of<N>` -> the shard, if the token is a tag.
fn parse_tag(token: &str) -> Option<Shard> {
    let (i, n) = token.strip_prefix('s')?.split_once("of")?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(i) || !digits(n) {
        return None;
    }
    Shard::new(i.parse().ok()?, n.parse().ok()?).ok().flatten()
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented rule, pinned: these values must never change (a user would move to
    /// another shard). Computed once with XXH3-64, seed 0.
    #[test]
    fn the_shard_of_a_user_is_pinned() {
        let ids = [
            "919565428256",
            "919000000001",
            "3f6c1a2b-0000-4000-8000-000000000001",
            "5000007919",
            "asha@example.com",
            "",
        ];
        let got: Vec<(u64, u32, u32, u32)> = ids
            .iter()
            .map(|id| {
                (
                    xxhash_rust::xxh3::xxh3_64(id.as_bytes()),
                    shard_of(id, 3),
                    shard_of(id, 4),
                    shard_of(id, 16),
                )
            })
            .collect();
        assert_eq!(got, GOLDEN.to_vec());
    }

    /// Checked with Python's `xxhash` 4.1: `xxh3_64_intdigest(id.encode()) % N`.
    const GOLDEN: [(u64, u32, u32, u32); 6] = [
        (14_159_533_315_206_610_203, 0, 3, 11),
        (248_770_637_451_482_098, 1, 2, 2),
        (15_643_444_121_769_539_805, 0, 1, 13),
        (15_693_970_092_816_966_963, 0, 3, 3),
        (12_393_545_148_031_203_784, 1, 0, 8),
        (3_244_421_341_483_603_138, 1, 2, 2),
    ];

    #[test]
    fn shards_parse_and_partition_users() {
        assert_eq!(Shard::parse("1/4"), Ok(Some(Shard { index: 1, count: 4 })));
        assert_eq!(Shard::parse(" 0 / 1 "), Ok(None));
        for bad in ["4/4", "1", "a/b", "-1/3", "0/0", "0/70000"] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
        let ids: Vec<String> = (0..1000).map(|i| format!("91{i:010}")).collect();
        let mut seen = vec![0u32; 4];
        for id in &ids {
            let owners: Vec<u32> = (0..4)
                .filter(|&i| Shard { index: i, count: 4 }.contains(id))
                .collect();
            assert_eq!(owners.len(), 1, "{id} is in exactly one shard");
            seen[owners[0] as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 200), "{seen:?}");
    }

    #[test]
    fn tags_name_the_shard_and_are_found_in_names() {
        let s = Shard {
            index: 2,
            count: 16,
        };
        assert_eq!(s.tag(), "s2of16");
        assert_eq!(
            Shard::tag_in(".part-20260801T0000-s2of16-a1b2c3d4e5f6-00000.parquet.20260812.tmp"),
            Some(s)
        );
        assert_eq!(
            Shard::tag_in("users/.part-users.parquet.20260812.tmp"),
            None
        );
        assert_eq!(Shard::tag_in("incremental@s2of16"), Some(s));
        assert_eq!(Shard::tag_in("s2of1"), None);
    }
}
