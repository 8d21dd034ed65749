//! Mutations: byte-level (flip, set, insert, delete, duplicate, splice, dictionary tokens) and,
//! for seeds that are JSON, structural (replace a value with a hostile one, drop or duplicate a
//! member, change a key's case, nest deeply). Deterministic for a given seed.

use serde_json::{json, Value};

/// xorshift64*: small, fast and reproducible.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

/// FNV-1a, to name crash files by their content.
pub fn fingerprint(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Tokens worth inserting: the shapes that broke parsers here and elsewhere.
const TOKENS: &[&str] = &[
    "\\u0000",
    "\\ud800",
    "\\uffff",
    "9999-12-31T23:30:00-01:00",
    "0000-01-01T00:00:00Z",
    "1900-01-01T00:00:00Z",
    "2026-11-28T10:00:00+23:59",
    "2026-02-30T10:00:00Z",
    "2026-11-28T10:00:60Z",
    "-0",
    "1e999",
    "18446744073709551616",
    "-9223372036854775809",
    "null",
    "true",
    "[]",
    "{}",
    "\"\"",
    "\" \"",
    "[[[[[[[[[[[[[[[[",
    "]]]]",
    "}}}}",
    "\"records\"",
    "\"value\"",
    "\"data\"",
    "\"clientState\"",
    "\"activityDateTime\"",
    "\"targetResources\"",
    "\"@odata.nextLink\"",
    "\"Resources\"",
    "[server]",
    "[intake]",
    "[applications.a]",
    "= \"5m\"",
    "= 1e400",
    "= -1",
    "= 4294967296",
    "\n",
    ",",
    ":",
    "\\",
];

/// Values a structural mutation puts in place of an existing one.
fn hostile_value(rng: &mut Rng) -> Value {
    match rng.below(18) {
        0 => json!("\u{0}"),
        1 => json!("9999-12-31T23:30:00-01:00"),
        2 => json!("0000-01-01T00:00:00Z"),
        3 => json!("9999-12-31T23:59:59.9999999Z"),
        4 => json!("-9999-01-01T00:00:00Z"),
        5 => json!(""),
        6 => json!("x".repeat(5000)),
        7 => json!(u64::MAX),
        8 => json!(-1),
        9 => json!(1.5e300),
        10 => Value::Null,
        11 => json!(true),
        12 => json!([]),
        13 => json!({}),
        14 => {
            let mut v = json!("deep");
            for _ in 0..(20 + rng.below(120)) {
                v = json!([v]);
            }
            v
        }
        15 => json!("Groups/\u{0}/members"),
        16 => json!("2026-11-28T10:00:00.123456789012Z"),
        _ => json!("𝔘𝔫𝔦𝔠𝔬𝔡𝔢 \u{202e} \u{feff}"),
    }
}

pub struct Mutator {
    rng: Rng,
}

impl Mutator {
    pub fn new(rng: Rng) -> Self {
        Self { rng }
    }

    /// A mutant of one of `seeds`.
    pub fn mutate(&mut self, seeds: &[Vec<u8>]) -> Vec<u8> {
        let seed = &seeds[self.rng.below(seeds.len())];
        let mut data = if self.rng.chance(2) {
            match serde_json::from_slice::<Value>(seed) {
                Ok(mut value) => {
                    for _ in 0..=self.rng.below(3) {
                        self.structural(&mut value);
                    }
                    serde_json::to_vec(&value).unwrap_or_else(|_| seed.clone())
                }
                Err(_) => seed.clone(),
            }
        } else {
            seed.clone()
        };
        // Stack byte-level mutations on most inputs (fewer on structural mutants, which are
        // more useful while still valid JSON).
        let rounds = if self.rng.chance(3) {
            0
        } else {
            1 + self.rng.below(4)
        };
        for _ in 0..rounds {
            self.bytes(&mut data, seeds);
        }
        data.truncate(256 * 1024);
        data
    }

    fn bytes(&mut self, data: &mut Vec<u8>, seeds: &[Vec<u8>]) {
        let len = data.len();
        let at = self.rng.below(len + 1);
        match self.rng.below(8) {
            0 if len > 0 => {
                let i = self.rng.below(len);
                data[i] ^= 1 << self.rng.below(8);
            }
            1 if len > 0 => {
                let i = self.rng.below(len);
                data[i] = [0, 0x7f, 0x80, 0xff, b'"', b'\\', b'{', b'['][self.rng.below(8)];
            }
            2 => {
                let n = 1 + self.rng.below(8);
                let bytes: Vec<u8> = (0..n).map(|_| self.rng.next() as u8).collect();
                data.splice(at..at, bytes);
            }
            3 if len > 0 => {
                let end = (at + 1 + self.rng.below(32)).min(len);
                if at < end {
                    data.drain(at..end);
                }
            }
            4 if len > 0 => {
                let start = self.rng.below(len);
                let end = (start + 1 + self.rng.below(64)).min(len);
                let copy = data[start..end].to_vec();
                data.splice(at..at, copy);
            }
            5 => {
                let other = &seeds[self.rng.below(seeds.len())];
                if !other.is_empty() {
                    let from = self.rng.below(other.len());
                    let to = (from + 1 + self.rng.below(128)).min(other.len());
                    data.splice(at..at, other[from..to].iter().copied());
                }
            }
            _ => {
                let token = TOKENS[self.rng.below(TOKENS.len())].as_bytes();
                if len > 0 && self.rng.chance(2) {
                    let end = (at + token.len()).min(len);
                    data.splice(at..end, token.iter().copied());
                } else {
                    data.splice(at..at, token.iter().copied());
                }
            }
        }
    }

    /// Changes one node of `value`, chosen by a random walk from the root.
    fn structural(&mut self, value: &mut Value) {
        let descend = !self.rng.chance(4);
        match value {
            Value::Object(members) if !members.is_empty() && descend => {
                let keys: Vec<String> = members.keys().cloned().collect();
                let key = keys[self.rng.below(keys.len())].clone();
                match self.rng.below(10) {
                    0 => {
                        members.remove(&key);
                    }
                    1 => {
                        if let Some(v) = members.remove(&key) {
                            let renamed = if self.rng.chance(2) {
                                key.to_uppercase()
                            } else {
                                format!("{key}\u{0}")
                            };
                            members.insert(renamed, v);
                        }
                    }
                    _ => {
                        if let Some(child) = members.get_mut(&key) {
                            self.structural(child);
                        }
                    }
                }
            }
            Value::Array(items) if !items.is_empty() && descend => {
                let i = self.rng.below(items.len());
                match self.rng.below(8) {
                    0 => {
                        items.remove(i);
                    }
                    1 => {
                        let copy = items[i].clone();
                        let copies = 1 + self.rng.below(50);
                        for _ in 0..copies {
                            items.push(copy.clone());
                        }
                    }
                    _ => self.structural(&mut items[i]),
                }
            }
            Value::String(text) if self.rng.chance(2) => {
                // Keep most of the text, spoil a part: parsers often check a prefix.
                let mut chars: Vec<char> = text.chars().collect();
                let at = self.rng.below(chars.len() + 1);
                let insert = ['\u{0}', '\u{7f}', '\u{fffd}', ':', '+', '-', '9', 'T', 'Z'];
                chars.insert(at, insert[self.rng.below(insert.len())]);
                *text = chars.into_iter().collect();
            }
            other => *other = hostile_value(&mut self.rng),
        }
    }
}
