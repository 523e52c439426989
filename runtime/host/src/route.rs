//! Route patterns: Django `path()` syntax as Channels' `URLRouter` uses it
//! for WebSocket routes, e.g. `ws/chat/<str:room_name>/`.
//!
//! The semantics follow Django 4/5's `django.urls.resolvers.RoutePattern`
//! with `is_endpoint=True` (every WebSocket route is an endpoint):
//!
//! * A pattern is literal text with parameters in angle brackets,
//!   `<converter:name>` or `<name>` (which means `<str:name>`).
//! * The converters are Django's built-in ones:
//!
//!   | converter | matches                                                    |
//!   | --------- | ---------------------------------------------------------- |
//!   | `str`     | `[^/]+`: one or more characters other than `/`             |
//!   | `int`     | `[0-9]+`: ASCII digits (no sign)                           |
//!   | `slug`    | `[-a-zA-Z0-9_]+`: ASCII letters, digits, `-` and `_`       |
//!   | `uuid`    | `[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}` |
//!   | `path`    | `.+`: one or more characters, `/` included                 |
//!
//! * Literal text matches itself only: regex metacharacters in it are
//!   escaped, so `ws/a.b+c/` matches exactly `ws/a.b+c/`.
//! * The empty pattern `""` is Django's `path("", view)`: it matches the
//!   root path `/` only (a dashboard page at the site's root).
//! * The whole path must match (the regex is anchored at both ends), so a
//!   trailing `/` in the pattern is required in the path, and absent from
//!   the pattern it must be absent from the path.
//!
//! Matching takes the *percent-decoded* request path without its query
//! string (ASGI's `scope["path"]`). Like Channels, one leading `/` is
//! stripped before matching, which is why a pattern must not begin with `/`.
//!
//! Where Django only warns (a pattern starting with `/`, unbalanced angle
//! brackets) or fails with an obscure regex error (a parameter name used
//! twice), parsing here fails with a [`RouteError`] that names the pattern,
//! says what is wrong and where (a 1-based character column), so a bad
//! manifest is rejected when it is loaded rather than silently never
//! matching.

use std::fmt;
use std::str::FromStr;

use regex::Regex;

/// Why a route pattern was rejected.
///
/// Every message quotes the pattern and says what is wrong with it; those
/// about one spot in it give the 1-based character column of that spot.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// The pattern starts with `/`, which can never match because the
    /// leading `/` of the request path is stripped before matching.
    #[error(
        "route pattern {pattern:?} starts with '/' at column 1: the leading slash of the \
         request path is stripped before matching (as Channels does), so write the route \
         without it, e.g. \"ws/echo/\" rather than \"/ws/echo/\""
    )]
    LeadingSlash {
        /// The pattern as written.
        pattern: String,
    },

    /// A `<` with no `>` closing it before the end of the pattern or the
    /// next `<`.
    #[error(
        "route pattern {pattern:?} has an unclosed '<' at column {column}: a parameter is \
         written <converter:name> or <name>"
    )]
    UnclosedParam {
        /// The pattern as written.
        pattern: String,
        /// 1-based character column of the `<`.
        column: usize,
    },

    /// A `>` that does not close a parameter.
    #[error(
        "route pattern {pattern:?} has a '>' at column {column} with no '<' opening it: a \
         parameter is written <converter:name> or <name>"
    )]
    UnopenedParam {
        /// The pattern as written.
        pattern: String,
        /// 1-based character column of the `>`.
        column: usize,
    },

    /// `<>`: a parameter with neither converter nor name.
    #[error(
        "route pattern {pattern:?} has an empty parameter '<>' at column {column}: write \
         <converter:name> or <name>"
    )]
    EmptyParam {
        /// The pattern as written.
        pattern: String,
        /// 1-based character column of the `<`.
        column: usize,
    },

    /// Whitespace inside `<…>` (Django raises `ImproperlyConfigured` for it).
    #[error(
        "route pattern {pattern:?} has whitespace inside the parameter {param:?} at column \
         {column}: angle brackets must not contain whitespace"
    )]
    Whitespace {
        /// The pattern as written.
        pattern: String,
        /// 1-based character column of the `<`.
        column: usize,
        /// The parameter as written, brackets included.
        param: String,
    },

    /// `<:name>`: a colon with no converter before it.
    #[error(
        "route pattern {pattern:?} has no converter before the ':' in the parameter {param:?} \
         at column {column}: write <str:name> or just <name>"
    )]
    MissingConverter {
        /// The pattern as written.
        pattern: String,
        /// 1-based character column of the `<`.
        column: usize,
        /// The parameter as written, brackets included.
        param: String,
    },

    /// `<int:>`: a colon with no parameter name after it.
    #[error(
        "route pattern {pattern:?} has no name after the ':' in the parameter {param:?} at \
         column {column}: write <converter:name>"
    )]
    MissingName {
        /// The pattern as written.
        pattern: String,
        /// 1-based character column of the `<`.
        column: usize,
        /// The parameter as written, brackets included.
        param: String,
    },

    /// A parameter name that is not a valid (ASCII) Python identifier.
    #[error(
        "route pattern {pattern:?} uses the parameter name {name:?} at column {column}, which \
         isn't a valid identifier (ASCII letters, digits and '_', not starting with a digit)"
    )]
    InvalidName {
        /// The pattern as written.
        pattern: String,
        /// 1-based character column of the `<`.
        column: usize,
        /// The offending name.
        name: String,
    },

    /// A converter other than `str`, `int`, `slug`, `uuid` and `path`.
    #[error(
        "route pattern {pattern:?} uses the unknown converter {converter:?} at column {column}: \
         the converters are str, int, slug, uuid and path"
    )]
    UnknownConverter {
        /// The pattern as written.
        pattern: String,
        /// 1-based character column of the `<`.
        column: usize,
        /// The unknown converter's name.
        converter: String,
    },

    /// The same parameter name used twice.
    #[error(
        "route pattern {pattern:?} uses the parameter name {name:?} twice, at column \
         {first_column} and again at column {column}: parameter names must be unique"
    )]
    DuplicateName {
        /// The pattern as written.
        pattern: String,
        /// 1-based character column of the second use's `<`.
        column: usize,
        /// 1-based character column of the first use's `<`.
        first_column: usize,
        /// The repeated name.
        name: String,
    },

    /// The regex built from the pattern failed to compile. This should not
    /// happen, as every part of it is either escaped literal text or a fixed
    /// converter regex, but it is reported rather than panicking (it could
    /// for instance exceed the regex crate's size limit).
    #[error("route pattern {pattern:?} could not be compiled to a regex: {message}")]
    Regex {
        /// The pattern as written.
        pattern: String,
        /// The regex crate's message.
        message: String,
    },
}

/// One of Django's built-in path converters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Converter {
    Str,
    Int,
    Slug,
    Uuid,
    Path,
}

impl Converter {
    /// The converter called `name` in a pattern, if there is one.
    fn from_name(name: &str) -> Option<Self> {
        match name {
            "str" => Some(Self::Str),
            "int" => Some(Self::Int),
            "slug" => Some(Self::Slug),
            "uuid" => Some(Self::Uuid),
            "path" => Some(Self::Path),
            _ => None,
        }
    }

    /// The converter's name as written in a pattern.
    fn name(self) -> &'static str {
        match self {
            Self::Str => "str",
            Self::Int => "int",
            Self::Slug => "slug",
            Self::Uuid => "uuid",
            Self::Path => "path",
        }
    }

    /// The regex the converter matches, exactly Django's.
    ///
    /// `uuid` accepts lower-case hex only, as Django's `UUIDConverter` does:
    /// a UUID's canonical text form (`str(uuid.UUID(...))`) is lower case,
    /// and routing the same paths as the Django app being ported matters
    /// more than leniency; an upper-case UUID simply does not match.
    ///
    /// `.` (for `path`) does not match `\n` in either Python or the regex
    /// crate, so the two agree on a decoded `%0A` too.
    fn regex(self) -> &'static str {
        match self {
            Self::Str => "[^/]+",
            Self::Int => "[0-9]+",
            Self::Slug => "[-a-zA-Z0-9_]+",
            Self::Uuid => "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
            Self::Path => ".+",
        }
    }

    /// The kwarg value for the matched text `raw`.
    ///
    /// Django hands the view `converter.to_python(raw)`; Switchyard passes
    /// kwargs as strings, so the value is what Python's `str()` of that
    /// gives. Only `int` differs from the matched text: `str(int("007"))`
    /// is `"7"`. Leading zeros are stripped textually rather than by
    /// parsing, since Python ints have no size limit and neither does
    /// `[0-9]+`. (`uuid` would round-trip through `uuid.UUID` unchanged,
    /// being lower case already.)
    fn to_value(self, raw: &str) -> String {
        match self {
            Self::Int => {
                let digits = raw.trim_start_matches('0');
                if digits.is_empty() {
                    "0".to_owned()
                } else {
                    digits.to_owned()
                }
            }
            Self::Str | Self::Slug | Self::Uuid | Self::Path => raw.to_owned(),
        }
    }
}

/// A named parameter of a pattern.
#[derive(Debug, Clone)]
struct Param {
    name: String,
    converter: Converter,
}

/// A parsed route pattern such as `ws/chat/<str:room_name>/`.
///
/// Build one with [`RoutePattern::parse`] (or `str::parse`, or serde from a
/// string); match request paths with [`RoutePattern::matches`].
#[derive(Debug, Clone)]
pub struct RoutePattern {
    /// The pattern as written.
    pattern: String,
    /// The pattern with parameter names removed (`<str>` for `<room>`).
    shape: String,
    /// Number of literal characters.
    literal_len: usize,
    /// The parameters in pattern order; capture group `i + 1` is `params[i]`.
    params: Vec<Param>,
    /// `\A…\z`-anchored regex with one unnamed capture group per parameter.
    regex: Regex,
}

/// Whether `name` is a valid Python identifier, restricted to ASCII: a
/// letter or `_` followed by letters, digits and `_`. (Python would also
/// accept non-ASCII letters; Switchyard keeps kwarg names ASCII.)
fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl RoutePattern {
    /// Parse a Django `path()`-style route pattern.
    ///
    /// # Errors
    ///
    /// A [`RouteError`], naming the pattern and the problem's column, on:
    /// a leading `/`; unbalanced `<`/`>`; an empty `<>`;
    /// whitespace inside `<…>`; a missing converter or name around `:`; a
    /// name that isn't an identifier; an unknown converter; a name used
    /// twice.
    pub(crate) fn parse(pattern: &str) -> Result<Self, RouteError> {
        if pattern.starts_with('/') {
            return Err(RouteError::LeadingSlash {
                pattern: pattern.to_owned(),
            });
        }

        let owned = || pattern.to_owned();
        let mut regex = String::from(r"\A");
        let mut shape = String::new();
        let mut literal_len = 0;
        let mut params: Vec<Param> = Vec::new();
        // 1-based column of each parameter's `<`, parallel to `params`.
        let mut param_columns: Vec<usize> = Vec::new();

        // Literal text accumulates in `literal` until a parameter (or the
        // end) flushes it, escaped, into the regex.
        let mut literal = String::new();
        let mut chars = pattern.char_indices().enumerate();
        while let Some((index, (_, c))) = chars.next() {
            let column = index + 1;
            match c {
                '>' => {
                    return Err(RouteError::UnopenedParam {
                        pattern: owned(),
                        column,
                    });
                }
                '<' => {
                    // Collect the inside up to `>`; a `<` or the end first
                    // means this one is unclosed.
                    let mut inside = String::new();
                    loop {
                        match chars.next() {
                            Some((_, (_, '>'))) => break,
                            Some((_, (_, '<'))) | None => {
                                return Err(RouteError::UnclosedParam {
                                    pattern: owned(),
                                    column,
                                });
                            }
                            Some((_, (_, other))) => inside.push(other),
                        }
                    }
                    let param = Self::parse_param(pattern, column, &inside)?;
                    if let Some(first) = params.iter().position(|p| p.name == param.name) {
                        return Err(RouteError::DuplicateName {
                            pattern: owned(),
                            column,
                            first_column: param_columns[first],
                            name: param.name,
                        });
                    }

                    regex.push_str(&regex::escape(&literal));
                    literal.clear();
                    regex.push('(');
                    regex.push_str(param.converter.regex());
                    regex.push(')');

                    shape.push('<');
                    shape.push_str(param.converter.name());
                    shape.push('>');

                    params.push(param);
                    param_columns.push(column);
                }
                _ => {
                    literal.push(c);
                    shape.push(c);
                    literal_len += 1;
                }
            }
        }
        regex.push_str(&regex::escape(&literal));
        regex.push_str(r"\z");

        let regex = Regex::new(&regex).map_err(|e| RouteError::Regex {
            pattern: owned(),
            message: e.to_string(),
        })?;

        Ok(Self {
            pattern: owned(),
            shape,
            literal_len,
            params,
            regex,
        })
    }

    /// Parse the inside of one `<…>` found at `column` of `pattern`.
    ///
    /// Checks in Django's order (whitespace, then the name, then the
    /// converter), after the cases Django's regex would not even see as a
    /// parameter (`<>`, `<:name>`, `<int:>`).
    fn parse_param(pattern: &str, column: usize, inside: &str) -> Result<Param, RouteError> {
        let written = || format!("<{inside}>");
        if inside.is_empty() {
            return Err(RouteError::EmptyParam {
                pattern: pattern.to_owned(),
                column,
            });
        }
        if inside.chars().any(char::is_whitespace) {
            return Err(RouteError::Whitespace {
                pattern: pattern.to_owned(),
                column,
                param: written(),
            });
        }
        // Split at the first `:`; anything after it is the name (so
        // `<a:b:c>` is converter `a` with the invalid name `b:c`, as in
        // Django).
        let (converter, name) = inside.split_once(':').unwrap_or(("str", inside));
        if converter.is_empty() {
            return Err(RouteError::MissingConverter {
                pattern: pattern.to_owned(),
                column,
                param: written(),
            });
        }
        if name.is_empty() {
            return Err(RouteError::MissingName {
                pattern: pattern.to_owned(),
                column,
                param: written(),
            });
        }
        if !is_identifier(name) {
            return Err(RouteError::InvalidName {
                pattern: pattern.to_owned(),
                column,
                name: name.to_owned(),
            });
        }
        let converter =
            Converter::from_name(converter).ok_or_else(|| RouteError::UnknownConverter {
                pattern: pattern.to_owned(),
                column,
                converter: converter.to_owned(),
            })?;
        Ok(Param {
            name: name.to_owned(),
            converter,
        })
    }

    /// The pattern as written.
    #[must_use]
    pub(crate) fn as_str(&self) -> &str {
        &self.pattern
    }

    /// The pattern with parameter names removed, e.g. `ws/chat/<str>/`: two
    /// patterns with the same shape match exactly the same paths (`<room>`
    /// and `<str:room>` have the same shape).
    ///
    /// The router uses it to reject two routes that would shadow each other.
    /// The shape is unambiguous because literal text can contain neither `<`
    /// nor `>`.
    #[must_use]
    pub(crate) fn shape(&self) -> &str {
        &self.shape
    }

    /// Number of literal (non-parameter) characters; the router tries more
    /// specific routes first.
    ///
    /// Counted in characters, not bytes, so `café/` and `cafe/` are equally
    /// specific.
    #[must_use]
    pub(crate) fn literal_len(&self) -> usize {
        self.literal_len
    }

    /// Names of the parameters in order.
    // `pub`, unlike its neighbours: the fuzz targets (fuzz/), which build
    // this file on its own, check it.
    pub fn param_names(&self) -> impl Iterator<Item = &str> {
        self.params.iter().map(|p| p.name.as_str())
    }

    /// Match a request path; Some(kwargs in pattern order) on a full match.
    ///
    /// `path` is the percent-decoded path without a query string (ASGI's
    /// `scope["path"]`); one leading `/` is stripped first, as Channels'
    /// `URLRouter` does, so `/ws/chat/lobby/` and `ws/chat/lobby/` both
    /// match `ws/chat/<str:room_name>/`. Kwargs are `(name, value)` pairs;
    /// `int` values are canonicalised like Python's `str(int(x))` (`"007"`
    /// gives `"7"`), other values are the matched text.
    #[must_use]
    pub(crate) fn matches(&self, path: &str) -> Option<Vec<(String, String)>> {
        let path = path.strip_prefix('/').unwrap_or(path);
        // The literal text before the first parameter must start the path:
        // a check far cheaper than the regex, which most routes tried for
        // a request fail.
        let prefix = self.pattern.split('<').next().unwrap_or_default();
        if !path.starts_with(prefix) {
            return None;
        }
        let captures = self.regex.captures(path)?;
        self.params
            .iter()
            .enumerate()
            .map(|(i, param)| {
                // Every group is mandatory, so on a match each one took part;
                // `?` rather than a panic all the same.
                let raw = captures.get(i + 1)?.as_str();
                Some((param.name.clone(), param.converter.to_value(raw)))
            })
            .collect()
    }
}

impl fmt::Display for RoutePattern {
    /// The pattern as written.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.pattern)
    }
}

impl FromStr for RoutePattern {
    type Err = RouteError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl<'de> serde::Deserialize<'de> for RoutePattern {
    /// Deserialize from a string (manifests list routes as strings); an
    /// invalid pattern fails with the [`RouteError`] message.
    fn deserialize<D>(deserializer: D) -> Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        let pattern = String::deserialize(deserializer)?;
        Self::parse(&pattern).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn pat(pattern: &str) -> RoutePattern {
        RoutePattern::parse(pattern).unwrap()
    }

    fn err(pattern: &str) -> RouteError {
        RoutePattern::parse(pattern).unwrap_err()
    }

    /// `(name, value)` pairs as owned strings, for comparing with kwargs.
    fn kw(pairs: &[(&str, &str)]) -> Option<Vec<(String, String)>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    /// The single kwarg value of a one-parameter pattern, if it matches.
    fn one(pattern: &RoutePattern, path: &str) -> Option<String> {
        let mut kwargs = pattern.matches(path)?;
        assert_eq!(kwargs.len(), 1);
        Some(kwargs.remove(0).1)
    }

    // --- the tutorial route -------------------------------------------------

    #[test]
    fn tutorial_route() {
        let p = pat("ws/chat/<str:room_name>/");
        assert_eq!(p.matches("/ws/chat/lobby/"), kw(&[("room_name", "lobby")]));
        assert_eq!(p.matches("ws/chat/lobby/"), kw(&[("room_name", "lobby")]));
        assert_eq!(p.matches("/ws/chat/lobby"), None);
        assert_eq!(p.matches("/ws/chat//"), None);
        assert_eq!(p.matches("/ws/chat/a/b/"), None);
        assert_eq!(p.matches("/ws/chat/lobby/x"), None);
        assert_eq!(p.matches("/xws/chat/lobby/"), None);
    }

    #[test]
    fn percent_decoded_input_with_spaces_and_unicode() {
        let p = pat("ws/chat/<str:room_name>/");
        assert_eq!(
            p.matches("/ws/chat/caf\u{e9} au lait/"),
            kw(&[("room_name", "caf\u{e9} au lait")])
        );
        assert_eq!(
            p.matches("ws/chat/\u{1f600}?x=1/"),
            kw(&[("room_name", "\u{1f600}?x=1")])
        );
    }

    // --- converters ---------------------------------------------------------

    #[test]
    fn str_converter() {
        let p = pat("r/<str:x>");
        assert_eq!(one(&p, "r/abc"), Some("abc".into()));
        assert_eq!(one(&p, "r/a b.c-d_e~!"), Some("a b.c-d_e~!".into()));
        assert_eq!(one(&p, "r/line\nbreak"), Some("line\nbreak".into()));
        assert_eq!(p.matches("r/"), None, "str is never empty");
        assert_eq!(p.matches("r/a/b"), None, "str does not cross /");
        assert_eq!(p.matches("r/a/"), None);
    }

    #[test]
    fn bare_name_defaults_to_str() {
        let p = pat("r/<x>/");
        assert_eq!(p.shape(), "r/<str>/");
        assert_eq!(one(&p, "r/a b/"), Some("a b".into()));
        assert_eq!(p.matches("r//"), None);
        assert_eq!(p.matches("r/a/b/"), None);
    }

    #[test]
    fn int_converter() {
        let p = pat("r/<int:n>/");
        assert_eq!(one(&p, "r/42/"), Some("42".into()));
        assert_eq!(one(&p, "r/0/"), Some("0".into()));
        assert_eq!(p.matches("r/-1/"), None);
        assert_eq!(p.matches("r/+1/"), None);
        assert_eq!(p.matches("r/1a/"), None);
        assert_eq!(p.matches("r/1.5/"), None);
        assert_eq!(p.matches("r//"), None);
        assert_eq!(p.matches("r/\u{0663}/"), None, "non-ASCII digits");
    }

    #[test]
    fn int_canonicalisation() {
        let p = pat("r/<int:n>");
        assert_eq!(one(&p, "r/007"), Some("7".into()));
        assert_eq!(one(&p, "r/000"), Some("0".into()));
        assert_eq!(one(&p, "r/100"), Some("100".into()));
        let huge = "000123456789012345678901234567890123456789";
        assert_eq!(
            one(&p, &format!("r/{huge}")),
            Some("123456789012345678901234567890123456789".into())
        );
    }

    #[test]
    fn slug_converter() {
        let p = pat("r/<slug:s>");
        assert_eq!(one(&p, "r/Hello-world_2"), Some("Hello-world_2".into()));
        assert_eq!(one(&p, "r/-"), Some("-".into()));
        assert_eq!(p.matches("r/a b"), None);
        assert_eq!(p.matches("r/\u{e9}"), None);
        assert_eq!(p.matches("r/caf\u{e9}"), None);
        assert_eq!(p.matches("r/a.b"), None);
        assert_eq!(p.matches("r/a/b"), None);
        assert_eq!(p.matches("r/"), None);
    }

    #[test]
    fn uuid_converter() {
        let p = pat("r/<uuid:id>/");
        let id = "123e4567-e89b-12d3-a456-426614174000";
        assert_eq!(one(&p, &format!("r/{id}/")), Some(id.into()));
        // Upper case is rejected, as in Django.
        assert_eq!(p.matches("r/123E4567-E89B-12D3-A456-426614174000/"), None);
        assert_eq!(p.matches("r/123e4567-e89b-12d3-a456-42661417400A/"), None);
        // Wrong lengths.
        assert_eq!(p.matches("r/123e4567-e89b-12d3-a456-42661417400/"), None);
        assert_eq!(p.matches("r/123e4567-e89b-12d3-a456-4266141740000/"), None);
        assert_eq!(p.matches("r/123e456-e89b-12d3-a456-426614174000/"), None);
        assert_eq!(p.matches("r/123e4567-e89b-12d3-a45-6426614174000/"), None);
        // No hyphens, braces or non-hex.
        assert_eq!(p.matches("r/123e4567e89b12d3a456426614174000/"), None);
        assert_eq!(p.matches("r/{123e4567-e89b-12d3-a456-426614174000}/"), None);
        assert_eq!(p.matches("r/123e4567-e89b-12d3-a456-42661417400g/"), None);
    }

    #[test]
    fn path_converter() {
        let p = pat("files/<path:rest>");
        assert_eq!(one(&p, "files/a"), Some("a".into()));
        assert_eq!(one(&p, "files/a/b/c/"), Some("a/b/c/".into()));
        assert_eq!(one(&p, "/files//"), Some("/".into()));
        assert_eq!(p.matches("files/"), None, "path is never empty");
        assert_eq!(
            p.matches("files/a\nb"),
            None,
            "'.' excludes newline, as in Python"
        );
    }

    #[test]
    fn path_followed_by_literal() {
        let p = pat("ws/<path:p>/end/");
        assert_eq!(one(&p, "ws/a/b/end/"), Some("a/b".into()));
        assert_eq!(one(&p, "ws/a/end/b/end/"), Some("a/end/b".into()));
        assert_eq!(p.matches("ws//end/"), None);
    }

    // --- structure ----------------------------------------------------------

    #[test]
    fn several_params_and_mixed_literals() {
        let p = pat("ws/<int:a>-<slug:b>/x");
        assert_eq!(p.matches("ws/12-ab/x"), kw(&[("a", "12"), ("b", "ab")]));
        // `int` takes only digits, so the slug gets the rest, hyphens too.
        assert_eq!(p.matches("ws/01-2-3/x"), kw(&[("a", "1"), ("b", "2-3")]));
        assert_eq!(p.matches("ws/12ab/x"), None);
        assert_eq!(p.matches("ws/12-ab/x/"), None);
        assert_eq!(p.matches("ws/12-ab/"), None);
        assert_eq!(p.literal_len(), 6);
        assert_eq!(p.shape(), "ws/<int>-<slug>/x");
    }

    #[test]
    fn greedy_like_python() {
        // Python's regex engine gives the first group the longest match;
        // leftmost-first semantics in the regex crate agree.
        let p = pat("<a>-<b>");
        assert_eq!(p.matches("x-y-z"), kw(&[("a", "x-y"), ("b", "z")]));
        let p = pat("<a><b>");
        assert_eq!(p.matches("abc"), kw(&[("a", "ab"), ("b", "c")]));
        assert_eq!(p.matches("a"), None);
    }

    #[test]
    fn kwargs_in_pattern_order() {
        let p = pat("<zeta>/<int:alpha>/<slug:mu>/");
        assert_eq!(p.param_names().collect::<Vec<_>>(), ["zeta", "alpha", "mu"]);
        assert_eq!(
            p.matches("z/1/m/"),
            kw(&[("zeta", "z"), ("alpha", "1"), ("mu", "m")])
        );
    }

    #[test]
    fn no_params() {
        let p = pat("ws/echo/");
        assert_eq!(p.param_names().count(), 0);
        assert_eq!(p.matches("/ws/echo/"), Some(vec![]));
        assert_eq!(p.matches("ws/echo/"), Some(vec![]));
        assert_eq!(p.matches("ws/echo"), None);
        assert_eq!(p.matches("ws/echo/x"), None);
        assert_eq!(p.matches("x/ws/echo/"), None);
    }

    #[test]
    fn regex_metacharacters_are_literal() {
        let p = pat("ws/a.b+c/");
        assert_eq!(p.matches("ws/a.b+c/"), Some(vec![]));
        assert_eq!(p.matches("ws/aXb+c/"), None);
        assert_eq!(p.matches("ws/a.bbc/"), None);
        assert_eq!(p.matches("ws/a.bc/"), None);

        let weird = r"x/(a|b)*?[c]{2}^$\d/";
        let p = pat(weird);
        assert_eq!(p.matches(weird), Some(vec![]));
        assert_eq!(p.matches("x/a/"), None);
        assert_eq!(p.matches(r"x/(a|b)*?[c]{2}^$5/"), None);
    }

    #[test]
    fn leading_slash_of_path_is_optional_and_single() {
        let p = pat("ws/<x>/");
        assert_eq!(p.matches("/ws/a/"), kw(&[("x", "a")]));
        assert_eq!(p.matches("ws/a/"), kw(&[("x", "a")]));
        // Only one slash is stripped, as in Channels.
        assert_eq!(p.matches("//ws/a/"), None);
    }

    #[test]
    fn trailing_slash_must_agree() {
        let with = pat("ws/echo/");
        let without = pat("ws/echo");
        assert_eq!(with.matches("/ws/echo"), None);
        assert_eq!(with.matches("/ws/echo/"), Some(vec![]));
        assert_eq!(without.matches("/ws/echo/"), None);
        assert_eq!(without.matches("/ws/echo"), Some(vec![]));
    }

    #[test]
    fn anchored_at_both_ends() {
        let p = pat("chat/<int:n>");
        assert_eq!(p.matches("chat/1\n"), None, r"\z, not $");
        assert_eq!(p.matches("ws/chat/1"), None);
        assert_eq!(p.matches("chat/1/"), None);
    }

    #[test]
    fn shape_ignores_names_but_not_converters() {
        assert_eq!(pat("ws/chat/<room>/").shape(), "ws/chat/<str>/");
        assert_eq!(
            pat("ws/chat/<room>/").shape(),
            pat("ws/chat/<str:name>/").shape()
        );
        assert_eq!(
            pat("a/<int:x>/<slug:y>").shape(),
            pat("a/<int:p>/<slug:q>").shape()
        );
        assert_ne!(
            pat("ws/chat/<str:room>/").shape(),
            pat("ws/chat/<int:room>/").shape()
        );
        assert_ne!(pat("a/<path:p>").shape(), pat("a/<str:p>").shape());
        assert_ne!(pat("a/<x>/").shape(), pat("a/<x>").shape());
    }

    #[test]
    fn literal_len_counts_characters() {
        assert_eq!(pat("ws/chat/<str:room_name>/").literal_len(), 9);
        assert_eq!(pat("ws/echo/").literal_len(), 8);
        assert_eq!(pat("<path:p>").literal_len(), 0);
        assert_eq!(pat("<a><b>").literal_len(), 0);
        assert_eq!(pat("caf\u{e9}/<x>").literal_len(), 5);
        assert!(pat("ws/chat/lobby/").literal_len() > pat("ws/chat/<x>/").literal_len());
    }

    #[test]
    fn display_as_str_and_from_str() {
        let written = "ws/chat/<room>/";
        let p: RoutePattern = written.parse().unwrap();
        assert_eq!(p.as_str(), written);
        assert_eq!(p.to_string(), written);
        assert_eq!(
            "/ws/".parse::<RoutePattern>().unwrap_err(),
            RouteError::LeadingSlash {
                pattern: "/ws/".into()
            }
        );
    }

    #[test]
    fn python_keywords_and_underscores_are_valid_names() {
        // `str.isidentifier()` is true for keywords, so Django accepts them.
        let p = pat("<_>/<class>/<int:_x9>");
        assert_eq!(p.param_names().collect::<Vec<_>>(), ["_", "class", "_x9"]);
        assert_eq!(
            p.matches("a/b/09"),
            kw(&[("_", "a"), ("class", "b"), ("_x9", "9")])
        );
    }

    #[test]
    fn the_literal_text_before_the_first_parameter_must_start_the_path() {
        // `matches` refuses on this prefix before running the regex: the
        // answers must be the regex's own.
        let p = pat("api/hello/<str:name>/");
        assert_eq!(p.matches("/api/hello/x/"), kw(&[("name", "x")]));
        assert_eq!(p.matches("/api/Hello/x/"), None);
        assert_eq!(p.matches("/api/hell/x/"), None);
        assert_eq!(p.matches("//api/hello/x/"), None);
        assert_eq!(p.matches("/api/hello/"), None);
        // A pattern that starts with a parameter has no prefix to check.
        let p = pat("<int:n>/api/");
        assert_eq!(p.matches("/7/api/"), kw(&[("n", "7")]));
        assert_eq!(p.matches("/x/api/"), None);
        // A pattern without parameters is all prefix, and still anchored.
        let p = pat("ws/echo/");
        assert_eq!(p.matches("/ws/echo/"), Some(vec![]));
        assert_eq!(p.matches("/ws/echo/more/"), None);
    }

    // --- errors -------------------------------------------------------------

    #[test]
    fn empty_pattern_matches_the_root_only() {
        // Django's `path("", view)`: the site's root, `/` (or nothing).
        let p = pat("");
        assert_eq!(p.matches("/"), Some(vec![]));
        assert_eq!(p.matches(""), Some(vec![]));
        assert_eq!(p.matches("/ws/"), None);
        assert_eq!(p.matches("//"), None);
    }

    #[test]
    fn error_leading_slash() {
        let e = err("/ws/echo/");
        assert_eq!(
            e,
            RouteError::LeadingSlash {
                pattern: "/ws/echo/".into()
            }
        );
        assert_eq!(
            e.to_string(),
            "route pattern \"/ws/echo/\" starts with '/' at column 1: the leading slash of the \
             request path is stripped before matching (as Channels does), so write the route \
             without it, e.g. \"ws/echo/\" rather than \"/ws/echo/\""
        );
        assert!(matches!(err("/"), RouteError::LeadingSlash { .. }));
    }

    #[test]
    fn error_unclosed() {
        let e = err("ws/<room/");
        assert_eq!(
            e,
            RouteError::UnclosedParam {
                pattern: "ws/<room/".into(),
                column: 4
            }
        );
        assert_eq!(
            e.to_string(),
            "route pattern \"ws/<room/\" has an unclosed '<' at column 4: a parameter is \
             written <converter:name> or <name>"
        );
        // Closed only after another `<`: the first one is the unclosed one.
        assert_eq!(
            err("a<b<c>"),
            RouteError::UnclosedParam {
                pattern: "a<b<c>".into(),
                column: 2
            }
        );
        assert_eq!(
            err("<"),
            RouteError::UnclosedParam {
                pattern: "<".into(),
                column: 1
            }
        );
    }

    #[test]
    fn error_unopened() {
        let e = err("ws/room>/");
        assert_eq!(
            e,
            RouteError::UnopenedParam {
                pattern: "ws/room>/".into(),
                column: 8
            }
        );
        assert_eq!(
            e.to_string(),
            "route pattern \"ws/room>/\" has a '>' at column 8 with no '<' opening it: a \
             parameter is written <converter:name> or <name>"
        );
        assert_eq!(
            err("<a>>"),
            RouteError::UnopenedParam {
                pattern: "<a>>".into(),
                column: 4
            }
        );
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        assert_eq!(
            err("\u{e9}\u{e9}>"),
            RouteError::UnopenedParam {
                pattern: "\u{e9}\u{e9}>".into(),
                column: 3
            }
        );
    }

    #[test]
    fn error_empty_param() {
        let e = err("ws/<>/");
        assert_eq!(
            e,
            RouteError::EmptyParam {
                pattern: "ws/<>/".into(),
                column: 4
            }
        );
        assert_eq!(
            e.to_string(),
            "route pattern \"ws/<>/\" has an empty parameter '<>' at column 4: write \
             <converter:name> or <name>"
        );
    }

    #[test]
    fn error_whitespace() {
        let e = err("ws/chat/<str: room>/");
        assert_eq!(
            e,
            RouteError::Whitespace {
                pattern: "ws/chat/<str: room>/".into(),
                column: 9,
                param: "<str: room>".into()
            }
        );
        assert_eq!(
            e.to_string(),
            "route pattern \"ws/chat/<str: room>/\" has whitespace inside the parameter \
             \"<str: room>\" at column 9: angle brackets must not contain whitespace"
        );
        for bad in ["< room>", "<room >", "<int :x>", "<a\tb>", "<a\nb>", "< >"] {
            assert!(
                matches!(err(bad), RouteError::Whitespace { column: 1, .. }),
                "{bad:?}"
            );
        }
        // Whitespace in literal text is fine.
        assert_eq!(pat("a b/<x>").matches("a b/c"), kw(&[("x", "c")]));
    }

    #[test]
    fn error_missing_converter() {
        let e = err("ws/<:room>/");
        assert_eq!(
            e,
            RouteError::MissingConverter {
                pattern: "ws/<:room>/".into(),
                column: 4,
                param: "<:room>".into()
            }
        );
        assert_eq!(
            e.to_string(),
            "route pattern \"ws/<:room>/\" has no converter before the ':' in the parameter \
             \"<:room>\" at column 4: write <str:name> or just <name>"
        );
    }

    #[test]
    fn error_missing_name() {
        let e = err("ws/<int:>/");
        assert_eq!(
            e,
            RouteError::MissingName {
                pattern: "ws/<int:>/".into(),
                column: 4,
                param: "<int:>".into()
            }
        );
        assert_eq!(
            e.to_string(),
            "route pattern \"ws/<int:>/\" has no name after the ':' in the parameter \
             \"<int:>\" at column 4: write <converter:name>"
        );
        assert!(matches!(err("<:>"), RouteError::MissingConverter { .. }));
    }

    #[test]
    fn error_invalid_name() {
        let e = err("ws/<int:1room>/");
        assert_eq!(
            e,
            RouteError::InvalidName {
                pattern: "ws/<int:1room>/".into(),
                column: 4,
                name: "1room".into()
            }
        );
        assert_eq!(
            e.to_string(),
            "route pattern \"ws/<int:1room>/\" uses the parameter name \"1room\" at column 4, \
             which isn't a valid identifier (ASCII letters, digits and '_', not starting with \
             a digit)"
        );
        for (bad, name) in [
            ("<room-name>", "room-name"),
            ("<a.b>", "a.b"),
            ("<str:a:b>", "a:b"),
            ("<caf\u{e9}>", "caf\u{e9}"),
            ("<9>", "9"),
        ] {
            assert_eq!(
                err(bad),
                RouteError::InvalidName {
                    pattern: bad.into(),
                    column: 1,
                    name: name.into()
                }
            );
        }
        // Django checks the name before the converter.
        assert!(matches!(err("<nope:1x>"), RouteError::InvalidName { .. }));
    }

    #[test]
    fn error_unknown_converter() {
        let e = err("ws/<float:x>/");
        assert_eq!(
            e,
            RouteError::UnknownConverter {
                pattern: "ws/<float:x>/".into(),
                column: 4,
                converter: "float".into()
            }
        );
        assert_eq!(
            e.to_string(),
            "route pattern \"ws/<float:x>/\" uses the unknown converter \"float\" at column 4: \
             the converters are str, int, slug, uuid and path"
        );
        // Converter names are case-sensitive.
        assert!(matches!(
            err("<Int:x>"),
            RouteError::UnknownConverter { converter, .. } if converter == "Int"
        ));
    }

    #[test]
    fn error_duplicate_name() {
        let e = err("ws/<room>/<int:room>/");
        assert_eq!(
            e,
            RouteError::DuplicateName {
                pattern: "ws/<room>/<int:room>/".into(),
                column: 11,
                first_column: 4,
                name: "room".into()
            }
        );
        assert_eq!(
            e.to_string(),
            "route pattern \"ws/<room>/<int:room>/\" uses the parameter name \"room\" twice, at \
             column 4 and again at column 11: parameter names must be unique"
        );
    }

    #[test]
    fn error_regex_message() {
        // Not reachable through `parse` in practice; check its wording.
        let e = RouteError::Regex {
            pattern: "x".into(),
            message: "too big".into(),
        };
        assert_eq!(
            e.to_string(),
            "route pattern \"x\" could not be compiled to a regex: too big"
        );
    }

    // --- serde --------------------------------------------------------------

    #[derive(Debug, serde::Deserialize)]
    struct Manifest {
        routes: Vec<RoutePattern>,
    }

    #[test]
    fn deserialize_from_string() {
        let m: Manifest =
            toml::from_str(r#"routes = ["ws/chat/<str:room_name>/", "ws/echo/"]"#).unwrap();
        let routes: Vec<&str> = m.routes.iter().map(RoutePattern::as_str).collect();
        assert_eq!(routes, ["ws/chat/<str:room_name>/", "ws/echo/"]);
        assert_eq!(
            m.routes[0].matches("/ws/chat/lobby/"),
            kw(&[("room_name", "lobby")])
        );
    }

    #[test]
    fn deserialize_invalid_pattern_fails_with_route_error_message() {
        let e = toml::from_str::<Manifest>(r#"routes = ["/ws/echo/"]"#).unwrap_err();
        let expected = err("/ws/echo/").to_string();
        assert!(e.to_string().contains(&expected), "{e}");

        let e = toml::from_str::<Manifest>(r#"routes = ["ws/<float:x>/"]"#).unwrap_err();
        assert!(e.to_string().contains("unknown converter \"float\""), "{e}");
    }

    #[test]
    fn deserialize_rejects_non_strings() {
        assert!(toml::from_str::<Manifest>("routes = [1]").is_err());
    }
}
