//! HPACK (RFC 7541) decoding of brokerd's response headers.
//!
//! Why not a crate: measured in the shim, loona-hpack (the maintained fork of `hpack`) rebuilds
//! a hash table of the whole Huffman code for every Huffman-coded string, which cost 0.15 ms of
//! a 1.3 ms kubectl credential call; httlib-hpack indexes past the end of truncated input and
//! panics. Decoding is small: integers, string literals, the static table, a bounded dynamic
//! table, and the canonical Huffman code, which is fully described by its code lengths.
//!
//! Every input is bounded: integers past 2^28, indexes outside the tables, table size updates
//! above what was advertised, malformed Huffman data and a decoded header list larger than
//! SETTINGS_MAX_HEADER_LIST_SIZE are errors, never panics. The last matters because a small
//! block can name the same table entry thousands of times: 64 KiB of one-byte references to
//! a 4 KiB entry would decode to a quarter of a gigabyte.

use std::collections::VecDeque;

/// Why a header block could not be decoded.
#[derive(Debug, PartialEq, Eq)]
pub enum HpackError {
    Truncated,
    IntegerTooLarge,
    BadIndex,
    TableSizeTooLarge,
    TableSizeUpdateMisplaced,
    BadHuffman,
    ListTooLarge,
}

impl std::fmt::Display for HpackError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HpackError::Truncated => "a header block ends mid-field",
            HpackError::IntegerTooLarge => "an integer in a header block is too large",
            HpackError::BadIndex => "a header refers to a table entry that does not exist",
            HpackError::TableSizeTooLarge => "a table size update exceeds the advertised limit",
            HpackError::TableSizeUpdateMisplaced => "a table size update follows a header",
            HpackError::BadHuffman => "a Huffman-coded string is malformed",
            HpackError::ListTooLarge => "the decoded header list is larger than advertised",
        })
    }
}

/// The decoding state of one connection: its dynamic table.
pub struct Decoder {
    dynamic: VecDeque<(Vec<u8>, Vec<u8>)>,
    /// Octets the table holds, as RFC 7541 §4.1 counts them.
    size: usize,
    /// The table's current maximum, as the peer last set it.
    max_size: usize,
    /// SETTINGS_HEADER_TABLE_SIZE as this side advertised it: the peer may not go above.
    limit: usize,
    /// SETTINGS_MAX_HEADER_LIST_SIZE as this side advertised it: the most one block may
    /// decode to, counted as RFC 9113 §6.5.2 counts it (name, value and 32 octets a field).
    max_list: usize,
}

impl Decoder {
    /// A decoder for a peer told that the table may hold `limit` octets and that a header
    /// list may be `max_list` octets.
    pub fn new(limit: usize, max_list: usize) -> Self {
        Decoder {
            dynamic: VecDeque::new(),
            size: 0,
            max_size: limit,
            limit,
            max_list,
        }
    }

    /// Decodes one complete header block, calling `field` with each name and value.
    pub fn decode(
        &mut self,
        block: &[u8],
        mut field: impl FnMut(&[u8], &[u8]),
    ) -> Result<(), HpackError> {
        let mut input = Input { bytes: block };
        let mut fields_seen = false;
        let mut list = 0usize;
        let max_list = self.max_list;
        let mut count = |name: &[u8], value: &[u8]| {
            list += entry_size(name, value);
            if list > max_list {
                Err(HpackError::ListTooLarge)
            } else {
                Ok(())
            }
        };
        while let Some(&first) = input.bytes.first() {
            if first & 0x80 != 0 {
                // Indexed field (§6.1).
                let index = input.integer(7)?;
                let (name, value) = self.entry(index)?;
                count(name, value)?;
                field(name, value);
            } else if first & 0x40 != 0 {
                // Literal with incremental indexing (§6.2.1).
                let (name, value) = self.literal(&mut input, 6)?;
                count(&name, &value)?;
                field(&name, &value);
                self.insert(name, value);
            } else if first & 0x20 != 0 {
                // Dynamic table size update (§6.3): only before the first field (§4.2).
                if fields_seen {
                    return Err(HpackError::TableSizeUpdateMisplaced);
                }
                let size = input.integer(5)?;
                if size > self.limit {
                    return Err(HpackError::TableSizeTooLarge);
                }
                self.max_size = size;
                self.evict(0);
                continue;
            } else {
                // Literal without indexing (§6.2.2) or never indexed (§6.2.3).
                let (name, value) = self.literal(&mut input, 4)?;
                count(&name, &value)?;
                field(&name, &value);
            }
            fields_seen = true;
        }
        Ok(())
    }

    fn literal(&self, input: &mut Input<'_>, prefix: u8) -> Result<(Vec<u8>, Vec<u8>), HpackError> {
        let index = input.integer(prefix)?;
        let name = if index == 0 {
            input.string()?
        } else {
            self.entry(index)?.0.to_vec()
        };
        Ok((name, input.string()?))
    }

    fn entry(&self, index: usize) -> Result<(&[u8], &[u8]), HpackError> {
        match index {
            0 => Err(HpackError::BadIndex),
            1..=61 => {
                let (name, value) = STATIC_TABLE[index - 1];
                Ok((name.as_bytes(), value.as_bytes()))
            }
            _ => self
                .dynamic
                .get(index - 62)
                .map(|(name, value)| (name.as_slice(), value.as_slice()))
                .ok_or(HpackError::BadIndex),
        }
    }

    fn insert(&mut self, name: Vec<u8>, value: Vec<u8>) {
        let size = entry_size(&name, &value);
        if size > self.max_size {
            // An entry larger than the table empties it and is not added (§4.4).
            self.dynamic.clear();
            self.size = 0;
            return;
        }
        self.evict(size);
        self.size += size;
        self.dynamic.push_front((name, value));
    }

    /// Evicts the oldest entries until `room` more octets fit.
    fn evict(&mut self, room: usize) {
        while self.size + room > self.max_size {
            match self.dynamic.pop_back() {
                Some((name, value)) => self.size -= entry_size(&name, &value),
                None => break,
            }
        }
    }
}

fn entry_size(name: &[u8], value: &[u8]) -> usize {
    name.len() + value.len() + 32
}

struct Input<'a> {
    bytes: &'a [u8],
}

impl Input<'_> {
    /// An integer with an N-bit prefix (§5.1), at most 2^28.
    fn integer(&mut self, prefix: u8) -> Result<usize, HpackError> {
        let (&first, mut rest) = self.bytes.split_first().ok_or(HpackError::Truncated)?;
        let mask = (1u8 << prefix) - 1;
        let mut value = usize::from(first & mask);
        if value == usize::from(mask) {
            let mut shift = 0;
            loop {
                let (&byte, next) = rest.split_first().ok_or(HpackError::Truncated)?;
                rest = next;
                if shift > 21 {
                    return Err(HpackError::IntegerTooLarge);
                }
                value += usize::from(byte & 0x7f) << shift;
                shift += 7;
                if byte & 0x80 == 0 {
                    break;
                }
            }
        }
        self.bytes = rest;
        Ok(value)
    }

    /// A string literal (§5.2), Huffman-decoded when flagged.
    fn string(&mut self) -> Result<Vec<u8>, HpackError> {
        let huffman = self.bytes.first().ok_or(HpackError::Truncated)? & 0x80 != 0;
        let length = self.integer(7)?;
        if length > self.bytes.len() {
            return Err(HpackError::Truncated);
        }
        let (text, rest) = self.bytes.split_at(length);
        self.bytes = rest;
        if huffman {
            huffman_decode(text)
        } else {
            Ok(text.to_vec())
        }
    }
}

/// RFC 7541 Appendix A.
const STATIC_TABLE: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// The length in bits of each symbol's code (RFC 7541 Appendix B); symbol 256 is EOS. The
/// code is canonical: codes of one length are consecutive, in symbol order, so the lengths are
/// all it takes to decode.
const CODE_LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28,
    28, 28, 28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5,
    5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6,
    6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22, 22, 23, 22,
    23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22,
    21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20,
    22, 22, 22, 23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19,
    21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22,
    22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, 30,
];

const MAX_CODE_LENGTH: usize = 30;
const EOS: u16 = 256;

/// The canonical code, arranged for decoding.
struct Canonical {
    /// Symbols ordered by code length, then value: the order codes are assigned in.
    symbols: [u16; 257],
    /// Per length: the first code of that length, and where its symbols start in `symbols`.
    first_code: [u32; MAX_CODE_LENGTH + 1],
    first_index: [u16; MAX_CODE_LENGTH + 1],
    count: [u16; MAX_CODE_LENGTH + 1],
}

const CANONICAL: Canonical = canonical();

const fn canonical() -> Canonical {
    let mut count = [0u16; MAX_CODE_LENGTH + 1];
    let mut symbol = 0;
    while symbol < 257 {
        count[CODE_LENGTHS[symbol] as usize] += 1;
        symbol += 1;
    }
    let mut first_code = [0u32; MAX_CODE_LENGTH + 1];
    let mut first_index = [0u16; MAX_CODE_LENGTH + 1];
    let mut code = 0u32;
    let mut index = 0u16;
    let mut length = 1;
    while length <= MAX_CODE_LENGTH {
        code = (code + count[length - 1] as u32) << 1;
        first_code[length] = code;
        first_index[length] = index;
        index += count[length];
        length += 1;
    }
    let mut symbols = [0u16; 257];
    let mut next = first_index;
    let mut symbol = 0;
    while symbol < 257 {
        let length = CODE_LENGTHS[symbol] as usize;
        symbols[next[length] as usize] = symbol as u16;
        next[length] += 1;
        symbol += 1;
    }
    Canonical {
        symbols,
        first_code,
        first_index,
        count,
    }
}

/// Decodes a Huffman-coded string (§5.2): the padding must be under 8 bits of the EOS code's
/// leading ones, and EOS itself must not appear.
fn huffman_decode(bytes: &[u8]) -> Result<Vec<u8>, HpackError> {
    let table = &CANONICAL;
    let mut out = Vec::with_capacity(bytes.len() * 8 / 5);
    let mut code = 0u32;
    let mut length = 0usize;
    for byte in bytes {
        for shift in (0..8).rev() {
            code = (code << 1) | u32::from((byte >> shift) & 1);
            length += 1;
            let offset = code.wrapping_sub(table.first_code[length]);
            if offset < u32::from(table.count[length]) {
                let symbol =
                    table.symbols[usize::from(table.first_index[length]) + offset as usize];
                if symbol == EOS {
                    return Err(HpackError::BadHuffman);
                }
                out.push(symbol as u8);
                code = 0;
                length = 0;
            } else if length == MAX_CODE_LENGTH {
                return Err(HpackError::BadHuffman);
            }
        }
    }
    // What is left is padding: fewer than 8 bits, all ones (a prefix of EOS).
    if length >= 8 || code != (1u32 << length) - 1 {
        return Err(HpackError::BadHuffman);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(
        decoder: &mut Decoder,
        block: &[u8],
    ) -> Result<Vec<(String, String)>, HpackError> {
        let mut fields = Vec::new();
        decoder.decode(block, |name, value| {
            fields.push((
                String::from_utf8_lossy(name).into_owned(),
                String::from_utf8_lossy(value).into_owned(),
            ));
        })?;
        Ok(fields)
    }

    fn hex(text: &str) -> Vec<u8> {
        let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
        digits
            .chunks(2)
            .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
            .collect()
    }

    /// The canonical codes, for encoding in tests.
    fn codes() -> Vec<(u32, u8)> {
        let mut codes = vec![(0, 0); 257];
        for length in 1..=MAX_CODE_LENGTH {
            for i in 0..CANONICAL.count[length] {
                let symbol = CANONICAL.symbols[usize::from(CANONICAL.first_index[length] + i)];
                codes[usize::from(symbol)] =
                    (CANONICAL.first_code[length] + u32::from(i), length as u8);
            }
        }
        codes
    }

    fn huffman_encode(text: &[u8]) -> Vec<u8> {
        let codes = codes();
        let mut out = Vec::new();
        let mut bits: u64 = 0;
        let mut count = 0;
        for &byte in text {
            let (code, length) = codes[usize::from(byte)];
            bits = (bits << length) | u64::from(code);
            count += u32::from(length);
            while count >= 8 {
                count -= 8;
                out.push((bits >> count) as u8);
            }
        }
        if count > 0 {
            out.push(((bits << (8 - count)) | ((1 << (8 - count)) - 1)) as u8);
        }
        out
    }

    #[test]
    fn the_code_is_a_prefix_code_and_round_trips_every_byte() {
        let codes = codes();
        // Kraft equality: a complete prefix code.
        let kraft: f64 = codes.iter().map(|(_, l)| 2f64.powi(-i32::from(*l))).sum();
        assert!((kraft - 1.0).abs() < 1e-12, "{kraft}");
        let every: Vec<u8> = (0..=255).collect();
        assert_eq!(huffman_decode(&huffman_encode(&every)).unwrap(), every);
    }

    #[test]
    fn rfc_7541_examples_decode() {
        // C.4.1: a request with Huffman-coded values.
        let mut decoder = Decoder::new(4096, 64 * 1024);
        let fields = decode_all(
            &mut decoder,
            &hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"),
        )
        .unwrap();
        assert_eq!(
            fields,
            [
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
            ]
            .map(|(n, v)| (n.to_string(), v.to_string()))
        );
        // C.4.2: the next request refers to the dynamic table the first one filled.
        let fields = decode_all(&mut decoder, &hex("8286 84be 5886 a8eb 1064 9cbf")).unwrap();
        assert_eq!(fields[3], (":authority".into(), "www.example.com".into()));
        assert_eq!(fields[4], ("cache-control".into(), "no-cache".into()));
        assert_eq!(decoder.size, 110);
    }

    #[test]
    fn the_dynamic_table_evicts_and_obeys_size_updates() {
        let mut decoder = Decoder::new(100, 64 * 1024);
        // Literal with indexing, new name "a"/"b" (34 octets), three times: the first is evicted.
        let add = |n: &str| {
            let mut b = vec![0x40, 1];
            b.extend_from_slice(n.as_bytes());
            b.push(1);
            b.push(b'v');
            b
        };
        for name in ["a", "b", "c"] {
            decode_all(&mut decoder, &add(name)).unwrap();
        }
        assert_eq!(decoder.dynamic.len(), 2);
        assert_eq!(decode_all(&mut decoder, &[0x80 | 62]).unwrap()[0].0, "c");
        assert_eq!(
            decode_all(&mut decoder, &[0x80 | 64]),
            Err(HpackError::BadIndex)
        );
        // A size update to 0 empties the table; one above the limit is refused.
        decode_all(&mut decoder, &[0x20]).unwrap();
        assert!(decoder.dynamic.is_empty());
        assert_eq!(
            decode_all(&mut decoder, &[0x3f, 0x50]),
            Err(HpackError::TableSizeTooLarge)
        );
        assert_eq!(
            decode_all(&mut decoder, &[0x82, 0x20]),
            Err(HpackError::TableSizeUpdateMisplaced)
        );
    }

    #[test]
    fn a_small_block_may_not_decode_to_a_huge_list() {
        // One 4 KiB entry in the table, then 64 Ki references to it: 256 MiB decoded.
        let mut decoder = Decoder::new(4096, 64 * 1024);
        let mut add = vec![0x40, 0x01, b'n', 0x7f];
        let value_len = 4000usize - 127;
        add.push(0x80 | (value_len % 128) as u8);
        add.push((value_len / 128) as u8);
        add.extend(std::iter::repeat_n(b'v', 4000));
        decode_all(&mut decoder, &add).unwrap();
        let bomb = vec![0x80 | 62; 64 * 1024];
        let mut decoded = 0usize;
        let result = decoder.decode(&bomb, |name, value| decoded += name.len() + value.len());
        assert_eq!(result, Err(HpackError::ListTooLarge));
        assert!(
            decoded <= 64 * 1024,
            "stopped at the limit, not after {decoded}"
        );
    }

    #[test]
    fn hostile_blocks_are_errors() {
        let cases: &[(&[u8], HpackError)] = &[
            (&[0x80], HpackError::BadIndex),
            (&[0xff], HpackError::Truncated),
            (
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
                HpackError::IntegerTooLarge,
            ),
            (&[0x00, 0x05, b'a'], HpackError::Truncated),
            (&[0x40], HpackError::Truncated),
            (&[0x00, 0x01, b'a', 0x81, 0x00], HpackError::BadHuffman),
            // All ones for 30 bits: EOS.
            (
                &[0x00, 0x01, b'a', 0x84, 0xff, 0xff, 0xff, 0xfc],
                HpackError::BadHuffman,
            ),
            // Padding that is not ones.
            (&[0x00, 0x01, b'a', 0x81, 0x08], HpackError::BadHuffman),
            (&[0xbf, 0x80, 0x80, 0x80, 0x01], HpackError::BadIndex),
        ];
        for (block, expected) in cases {
            let mut decoder = Decoder::new(4096, 64 * 1024);
            assert_eq!(
                decode_all(&mut decoder, block).as_ref().err(),
                Some(expected),
                "{block:x?}"
            );
        }
    }

    #[test]
    fn huffman_strings_decode() {
        for text in ["application/grpc", "0.1.0", "tokenbroker-version", "", "a"] {
            assert_eq!(
                huffman_decode(&huffman_encode(text.as_bytes())).unwrap(),
                text.as_bytes()
            );
        }
    }
}
