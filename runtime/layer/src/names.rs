//! Channels' channel and group name rules (`BaseChannelLayer`, channels 4.0-4.3).
//!
//! - A **channel** name has fewer than [`MAX_NAME_LENGTH`] characters and matches
//!   `^[a-zA-Z0-9\-_.]+(![0-9a-zA-Z\-_.]*)?$`: a non-local part, then optionally one
//!   `!` and a local part. Every channel a process creates is a `!` channel; all
//!   channels sharing a non-local part (up to and including the `!`) belong to one
//!   process, which is how channels_redis routes them.
//! - A **group** name has fewer than [`MAX_NAME_LENGTH`] characters and matches
//!   `^[a-zA-Z0-9\-_.]+$`.
//!
//! These checks are ASCII only, which is deliberately stricter than Python:
//! Channels' regex uses Unicode `\d`/`\w` (so non-ASCII letters and digits pass
//! after the `!`) and Python's `$` accepts one trailing `\n`. Both layers only ever
//! generate ASCII names, so only hand-written exotic names are affected, and those
//! are better refused everywhere than accepted by one process and not another.
//!
//! Checks are hand-written rather than a regex so that the error can say exactly
//! which character at which position is wrong. Positions count characters from 0.

use crate::LayerError;

/// Channels' `MAX_NAME_LENGTH`: a valid name is *shorter* than this, so 99
/// characters at most.
pub const MAX_NAME_LENGTH: usize = 100;

/// Checks a channel name against Channels' rules.
///
/// # Errors
/// [`LayerError::InvalidChannelName`], whose reason says what is wrong.
pub fn validate_channel_name(name: &str) -> Result<(), LayerError> {
    check(name, NameKind::Channel).map_err(|reason| LayerError::InvalidChannelName {
        name: shown(name),
        reason,
    })
}

/// Checks a group name against Channels' rules.
///
/// # Errors
/// [`LayerError::InvalidGroupName`], whose reason says what is wrong.
pub fn validate_group_name(name: &str) -> Result<(), LayerError> {
    check(name, NameKind::Group).map_err(|reason| LayerError::InvalidGroupName {
        name: shown(name),
        reason,
    })
}

/// The non-local part of a channel name: everything up to and including the first
/// `!`, or the whole name if it has none (channels_redis's `non_local_name`).
///
/// ```
/// use switchyard_layer::names::non_local_name;
/// assert_eq!(non_local_name("specific.abc!def"), "specific.abc!");
/// assert_eq!(non_local_name("thumbnails-generate"), "thumbnails-generate");
/// ```
pub fn non_local_name(name: &str) -> &str {
    match name.find('!') {
        Some(bang) => &name[..=bang],
        None => name,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum NameKind {
    Channel,
    Group,
}

/// Letters, digits, `-`, `_` and `.`: allowed anywhere in either kind of name.
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

/// `Err(reason)` if `name` breaks the rules for `kind`.
fn check(name: &str, kind: NameKind) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty".to_owned());
    }
    // Python counts characters, not bytes; a short byte length is short either way.
    if name.len() >= MAX_NAME_LENGTH {
        let chars = name.chars().count();
        if chars >= MAX_NAME_LENGTH {
            return Err(format!(
                "too long ({chars} chars, max {})",
                MAX_NAME_LENGTH - 1
            ));
        }
    }
    let mut bang = None;
    for (position, c) in name.chars().enumerate() {
        if is_name_char(c) {
            continue;
        }
        if c == '!' && kind == NameKind::Channel {
            if let Some(first) = bang {
                return Err(format!(
                    "second '!' at position {position} (the first is at position {first}; \
                     only one is allowed)"
                ));
            }
            if position == 0 {
                return Err(
                    "'!' at position 0 (at least one character must come before it)".to_owned(),
                );
            }
            bang = Some(position);
            continue;
        }
        let allowed = match kind {
            NameKind::Channel => "ASCII letters, digits, '-', '_', '.' and one '!'",
            NameKind::Group => "ASCII letters, digits, '-', '_' and '.'",
        };
        return Err(format!(
            "invalid character {c:?} at position {position} (allowed: {allowed})"
        ));
    }
    Ok(())
}

/// The name as an error shows it: cut to [`MAX_NAME_LENGTH`] characters.
fn shown(name: &str) -> String {
    match name.char_indices().nth(MAX_NAME_LENGTH) {
        Some((cut, _)) => format!("{}...", &name[..cut]),
        None => name.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel_reason(name: &str) -> String {
        match validate_channel_name(name) {
            Err(LayerError::InvalidChannelName { reason, .. }) => reason,
            other => panic!("expected InvalidChannelName for {name:?}, got {other:?}"),
        }
    }

    fn group_reason(name: &str) -> String {
        match validate_group_name(name) {
            Err(LayerError::InvalidGroupName { reason, .. }) => reason,
            other => panic!("expected InvalidGroupName for {name:?}, got {other:?}"),
        }
    }

    #[test]
    fn valid_channel_names() {
        for name in [
            // The wire spec's example of a channels_redis `new_channel()` name
            // (`docs/channels_redis_wire.md` 1.3): 74 chars.
            "specific.081d3d084c974929ab44df3425b2c09f!19fdae39d88d40b281117c4a23aa8224",
            "thumbnails-generate",
            "a",
            "a!",
            "A-Z_a.z-09",
            "specific..inmemory!AbCdEfGhIjKl",
            "x!.-_",
        ] {
            assert_eq!(validate_channel_name(name), Ok(()), "{name}");
        }
        assert_eq!(
            "specific.081d3d084c974929ab44df3425b2c09f!19fdae39d88d40b281117c4a23aa8224".len(),
            74
        );
    }

    #[test]
    fn length_limit_is_99_chars() {
        assert_eq!(validate_channel_name(&"a".repeat(99)), Ok(()));
        assert_eq!(validate_group_name(&"a".repeat(99)), Ok(()));
        assert_eq!(
            channel_reason(&"a".repeat(100)),
            "too long (100 chars, max 99)"
        );
        assert_eq!(
            group_reason(&"a".repeat(150)),
            "too long (150 chars, max 99)"
        );
        // Characters, not bytes, as Python counts: 60 two-byte chars are not too long
        // (they fail for being non-ASCII instead).
        assert!(channel_reason(&"é".repeat(60)).starts_with("invalid character 'é'"));
    }

    #[test]
    fn invalid_channel_names_say_what_is_wrong() {
        assert_eq!(channel_reason(""), "empty");
        assert_eq!(
            channel_reason(":group:x"),
            "invalid character ':' at position 0 (allowed: ASCII letters, digits, '-', '_', \
             '.' and one '!')"
        );
        assert_eq!(
            channel_reason("a!b!c"),
            "second '!' at position 3 (the first is at position 1; only one is allowed)"
        );
        assert_eq!(
            channel_reason("!abc"),
            "'!' at position 0 (at least one character must come before it)"
        );
        assert!(channel_reason("chat room").starts_with("invalid character ' ' at position 4"));
        assert!(channel_reason("a\n").starts_with("invalid character '\\n' at position 1"));
        // Python's Unicode `\w` accepts these after the `!`; this crate does not.
        assert!(channel_reason("a!é").starts_with("invalid character 'é' at position 2"));
        assert!(channel_reason("a!١").starts_with("invalid character '١' at position 2"));
    }

    #[test]
    fn group_names() {
        for name in ["chat", "chat_lobby", "room-1.2", "A"] {
            assert_eq!(validate_group_name(name), Ok(()), "{name}");
        }
        assert_eq!(group_reason(""), "empty");
        assert_eq!(
            group_reason("a!b"),
            "invalid character '!' at position 1 (allowed: ASCII letters, digits, '-', '_' \
             and '.')"
        );
        assert!(group_reason(":group:x").starts_with("invalid character ':' at position 0"));
        assert!(group_reason("chat/lobby").starts_with("invalid character '/' at position 4"));
    }

    #[test]
    fn error_display_names_the_channel_and_cuts_long_names() {
        let error = validate_channel_name("bad name").expect_err("space is invalid");
        assert_eq!(
            error.to_string(),
            "invalid channel name \"bad name\": invalid character ' ' at position 3 (allowed: \
             ASCII letters, digits, '-', '_', '.' and one '!')"
        );
        let error = validate_group_name(&"g".repeat(5000)).expect_err("too long");
        let LayerError::InvalidGroupName { name, reason } = error else {
            panic!("expected InvalidGroupName");
        };
        assert_eq!(name, format!("{}...", "g".repeat(100)));
        assert_eq!(reason, "too long (5000 chars, max 99)");
    }

    #[test]
    fn non_local_names() {
        assert_eq!(non_local_name("specific.abc!def"), "specific.abc!");
        assert_eq!(non_local_name("specific.abc!"), "specific.abc!");
        assert_eq!(non_local_name("a!b!c"), "a!");
        assert_eq!(non_local_name("plain"), "plain");
    }
}
