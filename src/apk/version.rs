//! The apk version grammar and ordering, reimplemented from the behaviour of apk-tools
//! (`apk version -t`): `digit{.digit}...{letter}{_suffix{digits}}...{~hash}{-r#}`.
//!
//! The ordering works on a token stream and must also order *invalid* versions the way
//! apk does (it compares the valid prefix, then falls back to the token kinds), because
//! an index may already contain such versions.

use std::cmp::Ordering;

/// Token kinds in the order apk uses to rank "which version goes on longer".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Token {
    InitialDigit,
    Digit,
    Letter,
    Suffix,
    SuffixNo,
    CommitHash,
    RevisionNo,
    End,
    Invalid,
}

/// Suffix ranks; everything before `None` is a pre-release and sorts before the bare
/// version.
const SUFFIX_INVALID: u8 = 0;
const SUFFIX_NONE: u8 = 5;

fn suffix_rank(s: &[u8]) -> u8 {
    match s {
        b"alpha" => 1,
        b"beta" => 2,
        b"pre" => 3,
        b"rc" => 4,
        b"cvs" => 6,
        b"svn" => 7,
        b"git" => 8,
        b"hg" => 9,
        b"p" => 10,
        _ => SUFFIX_INVALID,
    }
}

struct Tokenizer<'a> {
    rest: &'a [u8],
    token: Token,
    suffix: u8,
    number: u64,
    value: &'a [u8],
}

impl<'a> Tokenizer<'a> {
    fn new(v: &'a [u8]) -> Self {
        let mut t = Tokenizer {
            rest: v,
            token: Token::InitialDigit,
            suffix: SUFFIX_INVALID,
            number: 0,
            value: &[],
        };
        t.digits();
        t
    }

    fn take_while(&mut self, pred: impl Fn(u8) -> bool) -> &'a [u8] {
        let n = self.rest.iter().take_while(|&&b| pred(b)).count();
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        head
    }

    fn digits(&mut self) {
        let digits = self.take_while(|b| b.is_ascii_digit());
        // apk accumulates in a wrapping u64; matching that keeps huge numbers ordered the
        // same way apk orders them.
        self.number = digits.iter().fold(0u64, |acc, &d| {
            acc.wrapping_mul(10).wrapping_add(u64::from(d - b'0'))
        });
        self.value = digits;
        if digits.is_empty() {
            self.token = Token::Invalid;
        }
    }

    fn advance(&mut self) {
        let Some(&c) = self.rest.first() else {
            self.token = Token::End;
            return;
        };
        match c {
            b'a'..=b'z' => {
                if self.token > Token::Digit {
                    self.token = Token::Invalid;
                    return;
                }
                let (head, tail) = self.rest.split_at(1);
                self.value = head;
                self.rest = tail;
                self.token = Token::Letter;
            }
            b'.' | b'0'..=b'9' => {
                if c == b'.' {
                    if self.token > Token::Digit {
                        self.token = Token::Invalid;
                        return;
                    }
                    self.rest = &self.rest[1..];
                }
                self.token = match self.token {
                    Token::InitialDigit | Token::Digit => Token::Digit,
                    Token::Suffix => Token::SuffixNo,
                    _ => {
                        self.token = Token::Invalid;
                        return;
                    }
                };
                self.digits();
            }
            b'_' => {
                if self.token > Token::SuffixNo {
                    self.token = Token::Invalid;
                    return;
                }
                self.rest = &self.rest[1..];
                let name = self.take_while(|b| b.is_ascii_lowercase());
                self.value = name;
                self.suffix = suffix_rank(name);
                self.token = if self.suffix == SUFFIX_INVALID {
                    Token::Invalid
                } else {
                    Token::Suffix
                };
            }
            b'~' => {
                if self.token >= Token::CommitHash {
                    self.token = Token::Invalid;
                    return;
                }
                self.rest = &self.rest[1..];
                let hash = self.take_while(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
                self.value = hash;
                self.token = if hash.is_empty() {
                    Token::Invalid
                } else {
                    Token::CommitHash
                };
            }
            b'-' => {
                if self.token >= Token::RevisionNo || !self.rest.starts_with(b"-r") {
                    self.token = Token::Invalid;
                    return;
                }
                self.rest = &self.rest[2..];
                self.token = Token::RevisionNo;
                self.digits();
            }
            _ => self.token = Token::Invalid,
        }
    }
}

fn compare_tokens(a: &Tokenizer<'_>, b: &Tokenizer<'_>) -> Ordering {
    match a.token {
        Token::Digit if a.value.first() == Some(&b'0') || b.value.first() == Some(&b'0') => {
            // A leading zero makes the component a decimal fraction: compare as text.
            a.value.cmp(b.value)
        }
        Token::InitialDigit | Token::Digit | Token::SuffixNo | Token::RevisionNo => {
            a.number.cmp(&b.number)
        }
        Token::Letter => a.value.cmp(b.value),
        Token::Suffix => a.suffix.cmp(&b.suffix),
        Token::CommitHash | Token::End | Token::Invalid => a.value.cmp(b.value),
    }
}

/// Whether `v` is a valid apk version.
pub fn is_valid(v: &str) -> bool {
    let mut t = Tokenizer::new(v.as_bytes());
    while t.token < Token::End {
        t.advance();
    }
    t.token == Token::End
}

/// apk's version ordering (`apk version -t`).
pub fn compare(a: &str, b: &str) -> Ordering {
    compare_fuzzy(a, b, false)
}

/// apk's ordering where `b` matching a prefix of `a` counts as equal: how the fuzzy
/// operators (`~`, `>~`, `<~`) compare.
pub fn compare_prefix(a: &str, b: &str) -> Ordering {
    compare_fuzzy(a, b, true)
}

/// With `fuzzy`, `b` matching a prefix of `a` counts as equal (the `~` operator).
fn compare_fuzzy(a: &str, b: &str, fuzzy: bool) -> Ordering {
    let mut ta = Tokenizer::new(a.as_bytes());
    let mut tb = Tokenizer::new(b.as_bytes());
    while ta.token == tb.token && ta.token < Token::End {
        let r = compare_tokens(&ta, &tb);
        if r != Ordering::Equal {
            return r;
        }
        ta.advance();
        tb.advance();
    }
    if ta.token == tb.token || (fuzzy && tb.token == Token::End) {
        return Ordering::Equal;
    }
    // Equal so far: the longer version is newer unless it goes on with a pre-release suffix.
    if ta.token == Token::Suffix && ta.suffix < SUFFIX_NONE {
        return Ordering::Less;
    }
    if tb.token == Token::Suffix && tb.suffix < SUFFIX_NONE {
        return Ordering::Greater;
    }
    tb.token.cmp(&ta.token)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A selection of apk-tools' own version test data (test/unit/version.data): `v` must
    /// be valid, `!v` invalid, `a op b` must hold, `a !op b` must not.
    const APK_TOOLS_CASES: &[&str] = &[
        "2.34 > 0.1.0_alpha",
        "23_foo > 4_beta",
        "1.0 < 1.0bc",
        "0.1.0_alpha = 0.1.0_alpha",
        "0.1.0_alpha < 0.1.3_alpha",
        "0.1.3_alpha > 0.1.0_alpha",
        "0.1.0_alpha2 > 0.1.0_alpha",
        "0.1.0_alpha < 2.2.39-r1",
        "1.0.4-r4 < 1.6",
        "1.0.1 < 1.1",
        "1.1 > 1.1_alpha1",
        "1.1_alpha1 < 1.2.1",
        "1.2 < 1.3_alpha",
        "1.3_alpha < 1.3_alpha2",
        "1.3_alpha2 < 1.3_alpha3",
        "1.3_alpha8 > 0.6.0",
        "0.7.0 < 0.8_beta1",
        "0.8_beta1 < 0.8_beta2",
        "0.8_beta4 < 4.8-r1",
        "3.10.18-r1 > 2.3.0b-r1",
        "2.3.0b-r1 < 2.3.0b-r2",
        "2.3.0b-r2 < 2.3.0b-r3",
        "2.3.0b-r3 < 2.3.0b-r4",
        "2.3.0b-r4 > 0.12.1",
        "0.12.2 < 0.12.3",
        "0.12 < 0.13_beta1",
        "0.13_beta1 < 0.13_beta2",
        "0.13_beta2 < 0.13_beta3",
        "0.13_beta3 < 0.13_beta4",
        "0.13_beta4 < 0.13_beta5",
        "0.13_beta5 > 0.9.12",
        "0.9.12 < 0.9.13",
        "2.1.15-r2 < 2.1.15-r3",
        "1.2.14-r1 > 0.7.1",
        "1.0.8 < 1.2.1",
        "0.9.6 > 0.2.0-r1",
        "0.2.0-r1 < 3.1_p16",
        "3.1_p16 < 3.1_p17",
        "3.1_p17 > 1.06-r6",
        "1.06-r6 < 006",
        "0.3-r1 < 9.3.2-r4",
        "9.3.4 > 1.1.3",
        "2.9.3-r1 > 0.9-r1",
        "0.12 < 1.2.1-r1",
        "1.2.2 < 1.3",
        "20050718-r1 < 20050718-r2",
        "3.9.8-r5 > 2.01.01_alpha10",
        "2.01.01_alpha10 > 0.94",
        "1.0 > 0.99.3.20040818",
        "0.90.1-r1 > 0.10.2",
        "1.39 > 1.00_beta2",
        "1.00_beta2 > 0.9.2",
        "1.4 < 2.8.9-r1",
        "1.3.4-r3 < 2.2",
        "1.03-r1 < 1.12.12-r2",
        "0.5.2.7 < 4.2.52_p2-r1",
        "4.2.52_p2-r1 < 4.2.52_p4-r2",
        "4.2.52_p4-r2 > 1.02.07",
        "4.5 > 2.8.7-r1",
        "2.18.3-r10 > 1.05-r18",
        "2.20.1 < 2.20.3",
        "20050405 > 1.8",
        "0.47-r1 < 0.49",
        "2.0.6-r1 > 0.2-r6",
        "4 > 0.7.3-r2",
        "1.1.5 < 6.3.2-r1",
        "4.19 > 4.3.0",
        "1.0.0 < 1.0.1",
        "2.3.2-r1 < 2.4.2",
        "1.1 = 1.1",
        "2.1.10-r2 > 0.7.18-r2",
        "3.1.5-r2 < 3.4.6-r1",
        "2.0.34 > 1.8.3-r2",
        "4.1.4 > 1.2.10-r5",
        "4.1.0 < 8.11",
        "2.5.1-r8 < 2.5.1a-r1",
        "2.5.1a-r1 > 1.19.2-r1",
        "1.3.5-r10 > 1.3.5-r8",
        "0.9.11 < 0.9.12",
        "0.9.16 > 0.3-r2",
        "0.7.2-r3 < 1.2.10",
        "20040401 > 2.0.0_rc3-r1",
        "2.0.0_rc3-r1 > 1.5",
        "1.5 < 4.4",
        "0.3 < 20020207-r2",
        "2.0.2 > 0.99.163",
        "0.6.2-r1 < 0.6.3",
        "3.0.0-r2 < 021109-r3",
        "0.9.16-r1 < 3.9_pre20060124",
        "3.9_pre20060124 > 0.01",
        "1.1.7 < 6b-r7",
        "6b-r7 > 1.12-r7",
        "1.12-r7 < 1.12-r8",
        "0.5 < 3.96.1",
        "0.10.0 < 0.10.1_rc1",
        "0.10.1_rc1 > 0.9.11",
        "1.0.1 < 1.0.3",
        "1.0.1 < 1.2.2",
        "3.5.5 > 1.1.1",
        "1.0.2 > 1.0.1",
        "0.8.6-r3 < 2.3.17",
        "2.0.2 > 1.1a",
        "1.1a < 1.3a",
        "1.3a > 1.0.2",
        "1.0-r1 > 0.15.1b",
        "0.15.1b < 1.0.1",
        "1.06-r2 > 0.15.1b-r2",
        "0.15.1b-r2 > 0.15.1b",
        "0.15.1b < 2.5.7",
        "0.0.16 < 0.0.25",
        "1.1.3 < 1.1.20",
        "6.6 > 6.3",
        "1.2.14 < 1.2.15",
        "1.2.4-r1 > 0.1",
        "0.1.12 < 1.1.4.1",
        "1.0.2 < 2.6.26",
        "22.7-r1 < 22.7.3-r1",
        "22.7 > 2.1_pre20",
        "2.1_pre20 < 2.1_pre26",
        "2.1_pre26 > 0.2.3-r2",
        "0.2.3-r2 > 0.2.2",
        "2.10.1 > 02.08.01b",
        "02.08.01b < 4.77",
        "4.77 > 0.17",
        "1.2 < 5.1",
        "2.8.6-r1 < 2.8.6-r2",
        "0.9.2 < 8.1.2.20040524-r1",
        "3.81 > 1.6d",
        "1.6d > 1.2.07.8",
        "1.3.3 < 2.6.4",
        "6.5.1-r1 > 1.1.35-r1",
        "1.07.5 > 1.07",
        "1.0.4 < 20060811",
        "20061003 > 0.1_pre20060810",
        "0.1_pre20060810 < 0.1_pre20060817",
        "0.1_pre20060817 < 1.0.3",
        "1.0.3 > 1.0.2",
        "3.3.17 > 0.59s-r11",
        "0.59s-r11 < 0.65",
        "3.9.10 > 1.2.18",
        "2.0.1 < 2.0.2",
        "5.5-r3 > 0.25.3",
        "1.60-r11 < 1.60-r12",
        "5.28.0 > 0.51.6-r1",
        "20030719 > 4.01",
        "0.20070118 < 0.20070207_rc1",
        "0.20070207_rc1 < 1.0",
        "1.0 < 1.13.0",
        "0.4.10 < 0.5.0",
        "2.3.30-r2 < 3.7_p1",
        "3.7_p1 > 1.3",
        "0.10.1 < 4.3_p2-r1",
        "4.3_p2-r1 < 4.3_p2-r5",
        "4.3_p2-r5 < 4.4_p1-r6",
        "4.4_p1-r6 < 4.5_p1-r1",
        "4.5_p1-r1 > 4.5_p1",
        "4.5_p1 < 4.5_p1-r1",
        "4.5_p1-r1 > 4.5_p1",
        "4.5_p1 > 0.9.8c-r1",
        "0.9.8c-r1 < 0.9.8d",
        "0.9.8d < 2.4.4",
        "2.0.6 = 2.0.6",
        "2.5.9 > 0.1.13",
        "2.2.0-r1 < 2.2.3-r2",
        "5.8.8-r2 > 5.1.6-r4",
        "0.11.3 < 1.10.7",
        "0.1.23 < 5b-r9",
        "5b-r9 > 2.2.10",
        "2.4.4-r4 < 3.0.3-r5",
        "3.2.7 > 0.3.1_rc8",
        "0.3.1_rc8 < 22.2",
        "2.4.3-r1 < 2.4.3-r4",
        "5.7-r3 > 5.1_p4",
        "5.1_p4 > 1.0.5",
        "3.8 > 0.2.3",
        "2.6.9-r1 > 1.7",
        "1.7 < 1.7b",
        "1.7b < 1.8.4-r3",
        "1.8.5 < 1.8.5_p2",
        "1.8.5_p2 > 1.1.3",
        "3.0.24 < 4.0.2-r5",
        "4.1.4-r1 < 4.1.5",
        "1.11 < 4.2.1-r11",
        "3.2.9 > 3.2.3",
        "1.4.9-r2 < 2.9.11_pre20051101-r2",
        "2.9.11_pre20051101-r2 < 2.9.11_pre20051101-r3",
        "2.9.11_pre20051101-r3 > 2.9.11_pre20051101",
        "2.9.11_pre20051101 < 2.9.11_pre20061021-r1",
        "2.9.11_pre20061021-r1 < 2.9.11_pre20061021-r2",
        "2.9.11_pre20061021-r2 < 5.36-r1",
        "2.6.1.2 < 2.6.1.3-r1",
        "1.1.12 > 1.1.7",
        "2.6.9-r1 > 2.6.9",
        "4.5.14 > 4.09-r1",
        "1.3.2-r3 < 1.6.8_p12-r1",
        "1.6.8_p12-r1 > 1.6.8_p9-r2",
        "1.6.8_p9-r2 > 1.3.0-r1",
        "1.6.9 < 5.0.5-r2",
        "8.4.9 > 7.6-r8",
        "1.1.9 > 1.0.6",
        "0.40-r1 < 2.25b-r5",
        "2.25b-r5 < 2.25b-r6",
        "2.25b-r6 > 1.0.4",
        "1.0.5 < 1.4_p12-r2",
        "1.4_p12-r2 < 1.4_p12-r5",
        "1.4_p12-r5 > 1.1",
        "0.9.28-r2 < 0.9.28.1",
        "103 < 104-r11",
        "1.23-r1 > 1.0.2",
        "5.52-r1 > 1.2.5_rc2",
        "1.2.5_rc2 > 0.1",
        "0.71-r1 < 20040406-r1",
        "20040406-r1 > 2.12r-r4",
        "2.12r-r4 < 2.12r-r5",
        "2.12r-r5 > 0.0.7",
        "1.0.3 < 1.8",
        "7.0.174 > 1.0.1",
        "1.1.1-r3 > 0.3.4_pre20061029",
        "0.3.4_pre20061029 < 0.4.0",
        "0.1.2 < 1.10.2",
        "1.13 > 1.0.1",
        "1.1.1 > 0.6.0",
        "1.1.0 > 0.2.0",
        "1.1.0 < 1.6.5",
        "2.8.1 > 1.2.0",
        "2.1.1 > 1.4.1",
        "1.1.0 < 1.2.1",
        "4.1.0 > 0.2.1-r1",
        "1.0.2 > 0.8",
        "1.2.12-r1 > 1.2.8",
        "2.31 > 1.2.3-r1",
        "1.3_pre1-r1 < 1.3.2",
        "1.0_p10-r0 > 1.0_p9-r0",
        "0.1.0_alpha_pre2 < 0.1.0_alpha",
        "1.0.0_pre20191002222144-r0 < 1.0.0_pre20210530193627-r0",
        "6.0_pre1 < 6.0",
        "6.1_pre1 < 6.1",
        "6.0_p1 > 6.0",
        "6.1_p1 > 6.1",
        "1.0~1234 < 1.0~2345",
        "1.0~1234-r1 < 1.0~2345-r0",
        "1.0~1234-r1 > 1.0~1234-r0",
        "3.6.0 ~ 3.6",
        "3.6.9 ~ 3.6",
        "3.6_pre1 ~ 3.6",
        "3.6.0_pre1 ~ 3.6",
        "3.6.9_post1 ~ 3.6",
        "3.6.0 ~ 3.6.0",
        "3.5 <~ 3.6",
        "3.7 >~ 3.6",
        "3.6.0 !~ 3.8",
        "3.6.9 !~ 3.8",
        "3.8 !~ 3.8.1",
        "3.8.0 !~ 3.8.1",
        "3.8.0.1 !~ 3.8.1",
        "3.6_pre1 !~ 3.8",
        "3.6.0_pre1 !~ 3.8",
        "3.6.9_post1 !~ 3.8",
        "1.2",
        "0.1_pre2",
        "0.1_pre2~1234abcd",
        "0.1_p1_pre2",
        "0.1_alpha1_pre2",
        "0.1_git20240101_pre1",
        "!",
        "!0.1bc",
        "!0.1bc1",
        "!0.1a1",
        "!0.1a.1",
        "!0.1_pre2~",
        "!0.1_pre2~1234xbcd",
        "!0.1_pre2~1234abcd_pre1",
        "!0.1_pre2-r1~1234xbcd",
        "!0.1_foobar",
        "!0.1_foobar1",
        "!0.1-pre1.1",
        "!0.1-r",
        "!0.1-r2_pre1",
        "!0.1-r2_p3_pre1",
        "!0.1-r2-r3",
        "!0.1-r2.1",
        "!.1",
        "!a",
        "!_pre1",
        "!-r1",
        "!0.1_",
        "!0.1_-r0",
        "!0.1__alpha",
        "!0.1_1_alpha",
    ];

    fn holds(a: &str, op: &str, b: &str) -> bool {
        let fuzzy = op.contains('~');
        let r = compare_fuzzy(a, b, fuzzy);
        op.chars().any(|c| match c {
            '<' => r == Ordering::Less,
            '>' => r == Ordering::Greater,
            '=' | '~' => r == Ordering::Equal,
            _ => panic!("unknown operator {op}"),
        })
    }

    fn check_case(case: &str) -> bool {
        let parts: Vec<&str> = case.split_whitespace().collect();
        match parts.as_slice() {
            [a, op, b] => match op.strip_prefix('!') {
                Some(op) => !holds(a, op, b),
                None => holds(a, op, b),
            },
            [v] => match v.strip_prefix('!') {
                Some(v) => !is_valid(v),
                None => is_valid(v),
            },
            [] => true,
            _ => panic!("bad case {case}"),
        }
    }

    #[test]
    fn apk_tools_version_data_holds() {
        let failed: Vec<&str> = APK_TOOLS_CASES
            .iter()
            .copied()
            .filter(|c| !check_case(c))
            .collect();
        assert!(failed.is_empty(), "failed: {failed:#?}");
    }

    #[test]
    fn full_apk_tools_version_data_holds_when_available() {
        // Development aid: APK_VERSION_DATA=/path/to/version.data checks every line.
        let Ok(path) = std::env::var("APK_VERSION_DATA") else {
            return;
        };
        let text = std::fs::read_to_string(path).expect("version.data");
        let failed: Vec<&str> = text
            .lines()
            .map(|l| l.split('#').next().unwrap_or("").trim())
            .filter(|c| !check_case(c))
            .collect();
        assert!(failed.is_empty(), "failed: {failed:#?}");
    }

    #[test]
    fn empty_and_hostile_versions_are_invalid() {
        for v in [
            "", " 1.0", "1.0 ", "1.0\0", "1.0-r1\n", "1.0/../x", "1..0", "1.0-r", "v1.0", "1.0-1",
        ] {
            assert!(!is_valid(v), "{v:?}");
        }
    }

    #[test]
    fn release_numbers_order_numerically() {
        assert_eq!(compare("1.0-r10", "1.0-r9"), Ordering::Greater);
        assert_eq!(compare("1.0-r0", "1.0"), Ordering::Greater);
        assert_eq!(compare("1.4.1-r3", "1.4.1-r3"), Ordering::Equal);
    }

    #[test]
    fn huge_numbers_do_not_panic() {
        let big = "9".repeat(400);
        assert!(is_valid(&big));
        let _ = compare(&big, "1");
        let _ = compare(&format!("1.{big}-r{big}"), &format!("1.{big}_p{big}"));
    }
}
