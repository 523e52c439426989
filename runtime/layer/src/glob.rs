//! [`Glob`]: Python's `fnmatch` patterns, as `fnmatch.translate` reads them.
//!
//! Channels turns a string key of `channel_capacity` into a regex with
//! `fnmatch.translate` and matches it against the whole channel name. This module
//! gives the same answers without a regex engine:
//!
//! - `*` matches any run of characters, including none (and `!`, `.`).
//! - `?` matches exactly one character.
//! - `[seq]` matches one character in `seq`, `[!seq]` one character not in it.
//!   `seq` holds single characters and ranges `a-z`; a `]` right after `[` or
//!   `[!` is a member, a `-` first or last is a member, and a reversed range such
//!   as `z-a` matches nothing. A `[` with no closing `]` is a literal `[`.
//! - Everything else, including `\`, matches itself. Matching is case-sensitive
//!   and covers the full name.
//!
//! Matching uses the classic single-backtrack wildcard algorithm, so it takes
//! O(pattern × name) steps at worst, whatever the pattern.

/// A compiled `fnmatch` pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Glob {
    tokens: Vec<Token>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(char),
    AnyChar,
    /// Consecutive `*` are folded into one (as `fnmatch.translate` does).
    Star,
    Set(CharSet),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct CharSet {
    negated: bool,
    /// Inclusive ranges; a single character `c` is `(c, c)`. Reversed ranges are
    /// dropped at parse time.
    ranges: Vec<(char, char)>,
}

impl CharSet {
    fn contains(&self, c: char) -> bool {
        let listed = self.ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi);
        listed != self.negated
    }
}

impl Token {
    /// Whether this single-character token matches `c`.
    fn matches(&self, c: char) -> bool {
        match self {
            Self::Literal(literal) => *literal == c,
            Self::AnyChar => true,
            Self::Set(set) => set.contains(c),
            Self::Star => false,
        }
    }
}

impl Glob {
    /// Compiles a pattern. Every string is a valid `fnmatch` pattern.
    pub(crate) fn new(pattern: &str) -> Self {
        let chars: Vec<char> = pattern.chars().collect();
        let mut tokens = Vec::with_capacity(chars.len());
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            i += 1;
            match c {
                '*' => {
                    if tokens.last() != Some(&Token::Star) {
                        tokens.push(Token::Star);
                    }
                }
                '?' => tokens.push(Token::AnyChar),
                '[' => match parse_set(&chars, i) {
                    Some((set, next)) => {
                        tokens.push(Token::Set(set));
                        i = next;
                    }
                    None => tokens.push(Token::Literal('[')),
                },
                _ => tokens.push(Token::Literal(c)),
            }
        }
        Self { tokens }
    }

    /// Whether the pattern matches all of `text`.
    pub(crate) fn matches(&self, text: &str) -> bool {
        let tokens = &self.tokens;
        let (mut t, mut p) = (0, 0);
        // After a `*`: the token after it, and where in `text` the star's run ends.
        let mut backtrack: Option<(usize, usize)> = None;
        loop {
            let next_char = text[t..].chars().next();
            if let Some(token) = tokens.get(p) {
                if *token == Token::Star {
                    p += 1;
                    backtrack = Some((p, t));
                    continue;
                }
                if let Some(c) = next_char
                    && token.matches(c)
                {
                    p += 1;
                    t += c.len_utf8();
                    continue;
                }
            } else if next_char.is_none() {
                return true;
            }
            // Mismatch: let the last `*` swallow one more character and retry.
            let Some((after_star, star_end)) = backtrack else {
                return false;
            };
            let Some(swallowed) = text[star_end..].chars().next() else {
                return false;
            };
            let star_end = star_end + swallowed.len_utf8();
            backtrack = Some((after_star, star_end));
            p = after_star;
            t = star_end;
        }
    }
}

/// Parses the set that starts at `chars[start]` (just after `[`). Returns the set
/// and the index after its `]`, or `None` if it never closes.
fn parse_set(chars: &[char], start: usize) -> Option<(CharSet, usize)> {
    let mut end = start;
    let negated = chars.get(end) == Some(&'!');
    if negated {
        end += 1;
    }
    let body_start = end;
    // A `]` first in the set is a member, not the end.
    if chars.get(end) == Some(&']') {
        end += 1;
    }
    while end < chars.len() && chars[end] != ']' {
        end += 1;
    }
    if end >= chars.len() {
        return None;
    }
    let body = &chars[body_start..end];
    let mut ranges = Vec::new();
    let mut k = 0;
    while k < body.len() {
        if k + 2 < body.len() && body[k + 1] == '-' {
            let (lo, hi) = (body[k], body[k + 2]);
            if lo <= hi {
                ranges.push((lo, hi));
            }
            k += 3;
        } else {
            ranges.push((body[k], body[k]));
            k += 1;
        }
    }
    Some((CharSet { negated, ranges }, end + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, text: &str) -> bool {
        Glob::new(pattern).matches(text)
    }

    #[test]
    fn star_and_question_mark() {
        assert!(matches("specific.*", "specific.abc!def"));
        assert!(matches("specific.*", "specific."));
        assert!(!matches("specific.*", "specific"));
        assert!(matches("*", ""));
        assert!(matches("*", "a!b.c"));
        assert!(matches("*!*", "specific.x!y"));
        assert!(!matches("*!*", "plain"));
        assert!(matches("a*b*c", "aXXbYYc"));
        assert!(matches("a*b*c", "abc"));
        assert!(!matches("a*b*c", "aXXbYY"));
        assert!(matches("a**c", "abc"));
        assert!(matches("?", "x"));
        assert!(!matches("?", ""));
        assert!(!matches("?", "xy"));
        assert!(matches("chat.?", "chat.1"));
        assert!(matches("*ab", "aab"));
        assert!(matches("*aab", "aaab"));
    }

    #[test]
    fn whole_name_and_case_sensitive() {
        assert!(matches("abc", "abc"));
        assert!(!matches("abc", "abcd"));
        assert!(!matches("abc", "xabc"));
        assert!(!matches("ABC", "abc"));
        assert!(matches("a.c", "a.c"));
        assert!(!matches("a.c", "abc"), "'.' is literal, not a regex dot");
        assert!(matches("a\\b", "a\\b"), "'\\' is literal");
    }

    #[test]
    fn sets() {
        assert!(matches("[abc]", "b"));
        assert!(!matches("[abc]", "d"));
        assert!(matches("[a-c]x", "bx"));
        assert!(!matches("[a-c]x", "dx"));
        assert!(matches("[!a-c]", "d"));
        assert!(!matches("[!a-c]", "b"));
        assert!(matches("[a-cx-z]", "y"));
        assert!(matches("[]]", "]"));
        assert!(matches("[!]]", "a"));
        assert!(!matches("[!]]", "]"));
        assert!(matches("[a-]", "-"));
        assert!(matches("[-a]", "-"));
        assert!(matches("[a-b-c]", "-"), "after a range, '-' is literal");
        assert!(!matches("[a-b-c]", "x"));
    }

    #[test]
    fn reversed_ranges_match_nothing() {
        assert!(!matches("[z-a]", "a"));
        assert!(!matches("[z-a]", "m"));
        assert!(
            matches("[!z-a]", "m"),
            "negated empty set matches any character"
        );
        assert!(matches("[a-cz-b]", "b"));
        assert!(!matches("[a-cz-b]", "z"));
    }

    #[test]
    fn unclosed_bracket_is_literal() {
        assert!(matches("[abc", "[abc"));
        assert!(!matches("[abc", "a"));
        assert!(matches("a[", "a["));
        assert!(matches("[!", "[!"));
        assert!(
            matches("[]", "[]"),
            "']' right after '[' is a member, so no close"
        );
        assert!(matches("x[*", "x[yz"));
    }
}
