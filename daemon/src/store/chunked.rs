//! Secrets larger than one credential can hold, split over several: what Windows Credential
//! Manager needs, whose credential blob holds at most 2,560 bytes while an Entra refresh token
//! can be larger.
//!
//! Layout, for the secret under `key`:
//! - `key` holds a header, `<generation>:<parts>:`, then the first piece;
//! - `key#<generation>.<i>` holds piece `i` (1 ≤ i < parts).
//!
//! A save writes the new generation's extra pieces first, then `key` (the one write that
//! switches readers over), then removes the previous generation's pieces. A save cut short at
//! any point leaves the old secret whole or the new one whole, never a mix; at worst some
//! pieces of an unfinished generation stay behind, unreferenced.

use std::fmt::Write as _;

/// The most pieces a secret may take: 16 × 2,560 bytes is 40 KB, far above any token.
pub const MOST_PARTS: usize = 16;

/// The store underneath: named byte values.
pub trait Pieces {
    type Error;
    fn get(&self, name: &str) -> Result<Option<Vec<u8>>, Self::Error>;
    fn set(&self, name: &str, value: &[u8]) -> Result<(), Self::Error>;
    /// False when there was nothing to remove.
    fn remove(&self, name: &str) -> Result<bool, Self::Error>;
}

/// What went wrong besides the store's own errors.
#[derive(Debug, PartialEq, Eq)]
pub enum Problem<E> {
    Store(E),
    /// The secret needs more than [`MOST_PARTS`] pieces.
    TooLarge {
        bytes: usize,
    },
    /// What is stored is not in this layout, or a piece is missing.
    Corrupt(String),
}

impl<E> From<E> for Problem<E> {
    fn from(error: E) -> Self {
        Problem::Store(error)
    }
}

fn piece_name(key: &str, generation: u32, index: usize) -> String {
    format!("{key}#{generation:08x}.{index}")
}

/// `(generation, parts, first piece)` from the value under `key`.
fn parse_header(value: &[u8]) -> Option<(u32, usize, &[u8])> {
    let first = value.iter().position(|&b| b == b':')?;
    let generation =
        u32::from_str_radix(std::str::from_utf8(value.get(..first)?).ok()?, 16).ok()?;
    let rest = value.get(first + 1..)?;
    let second = rest.iter().position(|&b| b == b':')?;
    let parts: usize = std::str::from_utf8(rest.get(..second)?)
        .ok()?
        .parse()
        .ok()?;
    if parts == 0 || parts > MOST_PARTS {
        return None;
    }
    Some((generation, parts, rest.get(second + 1..)?))
}

/// The secret under `key`, put back together.
pub fn load<P: Pieces>(store: &P, key: &str) -> Result<Option<Vec<u8>>, Problem<P::Error>> {
    let Some(head) = store.get(key)? else {
        return Ok(None);
    };
    let (generation, parts, first) = parse_header(&head)
        .ok_or_else(|| Problem::Corrupt("the stored value has no piece header".into()))?;
    let mut secret = first.to_vec();
    for index in 1..parts {
        let piece = store
            .get(&piece_name(key, generation, index))?
            .ok_or_else(|| Problem::Corrupt(format!("piece {index} of {parts} is missing")))?;
        secret.extend_from_slice(&piece);
    }
    Ok(Some(secret))
}

/// Stores `secret` under `key` in pieces of at most `limit` bytes, under a new `generation`
/// (the caller's random number; it must differ from the stored one).
pub fn save<P: Pieces>(
    store: &P,
    key: &str,
    secret: &[u8],
    limit: usize,
    generation: u32,
) -> Result<(), Problem<P::Error>> {
    let previous = store
        .get(key)?
        .and_then(|head| parse_header(&head).map(|(generation, parts, _)| (generation, parts)));
    let mut header = String::new();
    // The header's length depends on the number of parts, which depends on the room the header
    // leaves: the widest header (two digits) is assumed.
    let _ = write!(header, "{generation:08x}:{MOST_PARTS}:");
    let room_first = limit.saturating_sub(header.len());
    let rest = secret.get(room_first..).unwrap_or_default();
    let parts = 1 + rest.len().div_ceil(limit.max(1));
    if parts > MOST_PARTS || limit == 0 {
        return Err(Problem::TooLarge {
            bytes: secret.len(),
        });
    }
    for (offset, piece) in rest.chunks(limit).enumerate() {
        store.set(&piece_name(key, generation, offset + 1), piece)?;
    }
    header.clear();
    let _ = write!(header, "{generation:08x}:{parts}:");
    let mut head = header.into_bytes();
    head.extend_from_slice(
        secret
            .get(..room_first.min(secret.len()))
            .unwrap_or_default(),
    );
    store.set(key, &head)?;
    if let Some((old, old_parts)) = previous.filter(|(old, _)| *old != generation) {
        for index in 1..old_parts {
            // Unreferenced now; one left behind costs a little space, nothing else.
            let _ = store.remove(&piece_name(key, old, index));
        }
    }
    Ok(())
}

/// Removes the secret under `key` and its pieces; false when there was none.
pub fn delete<P: Pieces>(store: &P, key: &str) -> Result<bool, Problem<P::Error>> {
    let Some(head) = store.get(key)? else {
        return Ok(false);
    };
    // The value first: a delete cut short leaves unreferenced pieces, never a broken secret.
    let removed = store.remove(key)?;
    if let Some((generation, parts, _)) = parse_header(&head) {
        for index in 1..parts {
            let _ = store.remove(&piece_name(key, generation, index));
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    /// Credential Manager's limit, as the real store enforces it: a longer value is refused.
    const LIMIT: usize = 2560;

    #[derive(Default)]
    struct Fake {
        values: RefCell<BTreeMap<String, Vec<u8>>>,
        /// Writes allowed before the store starts failing (a save cut short).
        writes_left: RefCell<Option<usize>>,
    }

    impl Pieces for Fake {
        type Error = String;
        fn get(&self, name: &str) -> Result<Option<Vec<u8>>, String> {
            Ok(self.values.borrow().get(name).cloned())
        }
        fn set(&self, name: &str, value: &[u8]) -> Result<(), String> {
            if value.len() > LIMIT {
                return Err(format!("{name}: {} bytes is over the limit", value.len()));
            }
            if let Some(left) = self.writes_left.borrow_mut().as_mut() {
                if *left == 0 {
                    return Err("the store went away".into());
                }
                *left -= 1;
            }
            self.values.borrow_mut().insert(name.into(), value.to_vec());
            Ok(())
        }
        fn remove(&self, name: &str) -> Result<bool, String> {
            Ok(self.values.borrow_mut().remove(name).is_some())
        }
    }

    fn token(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| b'A' + ((i + seed as usize) % 26) as u8)
            .collect()
    }

    #[test]
    fn a_4_kb_token_is_split_under_the_limit_and_read_back_whole() {
        let store = Fake::default();
        let secret = token(4096, 0);
        save(&store, "rt/abc", &secret, LIMIT, 7).unwrap();
        assert_eq!(store.values.borrow().len(), 2);
        assert!(store.values.borrow().values().all(|v| v.len() <= LIMIT));
        assert_eq!(load(&store, "rt/abc").unwrap().unwrap(), secret);
    }

    #[test]
    fn sizes_around_the_limit_round_trip() {
        for len in [0, 1, 2546, 2547, 2548, 2560, 2561, 5105, 5106, 5120, 16_000] {
            let store = Fake::default();
            let secret = token(len, 3);
            save(&store, "k", &secret, LIMIT, 1).unwrap();
            assert_eq!(load(&store, "k").unwrap().unwrap(), secret, "{len} bytes");
        }
    }

    #[test]
    fn a_new_save_replaces_the_old_pieces_and_a_delete_removes_all() {
        let store = Fake::default();
        save(&store, "k", &token(9000, 1), LIMIT, 1).unwrap();
        save(&store, "k", &token(3000, 2), LIMIT, 2).unwrap();
        assert_eq!(
            store.values.borrow().len(),
            2,
            "{:?}",
            store.values.borrow().keys()
        );
        assert_eq!(load(&store, "k").unwrap().unwrap(), token(3000, 2));
        assert!(delete(&store, "k").unwrap());
        assert!(store.values.borrow().is_empty());
        assert!(!delete(&store, "k").unwrap());
        assert_eq!(load(&store, "k").unwrap(), None);
    }

    #[test]
    fn a_save_cut_short_leaves_the_old_secret_whole() {
        let store = Fake::default();
        let old = token(6000, 4);
        save(&store, "k", &old, LIMIT, 1).unwrap();
        for allowed in 0..3 {
            *store.writes_left.borrow_mut() = Some(allowed);
            assert!(save(&store, "k", &token(7000, 5), LIMIT, 10 + allowed as u32).is_err());
            *store.writes_left.borrow_mut() = None;
            assert_eq!(
                load(&store, "k").unwrap().unwrap(),
                old,
                "after {allowed} writes"
            );
        }
    }

    #[test]
    fn too_large_or_broken_values_are_errors_not_panics() {
        let store = Fake::default();
        assert_eq!(
            save(&store, "k", &token(LIMIT * MOST_PARTS + 1, 0), LIMIT, 1),
            Err(Problem::TooLarge {
                bytes: LIMIT * MOST_PARTS + 1
            })
        );
        store
            .values
            .borrow_mut()
            .insert("k".into(), b"no header".to_vec());
        assert!(matches!(load(&store, "k"), Err(Problem::Corrupt(_))));
        store
            .values
            .borrow_mut()
            .insert("k".into(), b"00000001:3:abc".to_vec());
        assert!(matches!(load(&store, "k"), Err(Problem::Corrupt(_))));
        store
            .values
            .borrow_mut()
            .insert("k".into(), b"00000001:99:abc".to_vec());
        assert!(matches!(load(&store, "k"), Err(Problem::Corrupt(_))));
    }
}
