//! Reading a command: its name in upper case, copied on the stack, and its words as bytes. Every
//! other part of the command knowledge reads commands through here; nothing allocates, as the
//! tables are consulted on every request.

use redis::{Arg, Cmd};

/// Longer than any command or subcommand name the tables know (`GEORADIUSBYMEMBER_RO` has 20
/// bytes), with room to spare.
pub(crate) const MAX_NAME: usize = 24;

/// A command or subcommand name in upper case, on the stack. A word longer than [`MAX_NAME`]
/// reads as the empty name, which no table knows.
#[derive(Clone, Copy)]
pub(crate) struct Name {
    buf: [u8; MAX_NAME],
    len: usize,
}

impl Name {
    /// `word` in upper case (the empty name when longer than [`MAX_NAME`]).
    pub(crate) fn of(word: &[u8]) -> Name {
        let mut buf = [0u8; MAX_NAME];
        if word.len() > MAX_NAME {
            return Name { buf, len: 0 };
        }
        for (d, s) in buf.iter_mut().zip(word) {
            *d = s.to_ascii_uppercase();
        }
        Name {
            buf,
            len: word.len(),
        }
    }

    /// The name's bytes, upper case.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Whether the name is in `table` (sorted and upper case: each table's tests check it).
    pub(crate) fn is_in(&self, table: &[&str]) -> bool {
        table
            .binary_search_by(|t| t.as_bytes().cmp(self.as_bytes()))
            .is_ok()
    }
}

/// The bytes of a plain argument; `None` for a cursor argument (`Arg::Cursor`).
pub(crate) fn arg_bytes(arg: Arg<&[u8]>) -> Option<&[u8]> {
    match arg {
        Arg::Simple(bytes) => Some(bytes),
        _ => None,
    }
}

/// Every word of a command, its name first (position 0, as Redis counts key positions). A
/// cursor argument reads as empty but keeps its place.
pub(crate) fn words(cmd: &Cmd) -> impl ExactSizeIterator<Item = &[u8]> + Clone + '_ {
    cmd.args_iter().map(|a| arg_bytes(a).unwrap_or_default())
}

/// A command's name in upper case; `None` when it has none (no words, or a cursor first).
pub(crate) fn command_name(cmd: &Cmd) -> Option<Name> {
    cmd.args_iter().next().and_then(arg_bytes).map(Name::of)
}

/// A command's name in upper case and the words after it; `None` when it has no name.
pub(crate) fn split(cmd: &Cmd) -> Option<(Name, impl ExactSizeIterator<Item = &[u8]> + Clone)> {
    Some((command_name(cmd)?, words(cmd).skip(1)))
}

/// Whether `rest` holds `option`, in any case.
pub(crate) fn has_option<'a>(mut rest: impl Iterator<Item = &'a [u8]>, option: &str) -> bool {
    rest.any(|a| a.eq_ignore_ascii_case(option.as_bytes()))
}

/// Checks a table of names: sorted (for [`Name::is_in`]), unique, upper case, short enough.
#[cfg(test)]
pub(crate) fn assert_sorted_names<'a>(names: impl IntoIterator<Item = &'a str>) {
    let names: Vec<&str> = names.into_iter().collect();
    for w in names.windows(2) {
        assert!(w[0] < w[1], "{} must come after {}", w[1], w[0]);
    }
    for name in names {
        assert_eq!(name, name.to_ascii_uppercase());
        assert!(name.len() <= MAX_NAME);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_upper_case_on_the_stack() {
        assert_eq!(Name::of(b"xReadGroup").as_bytes(), b"XREADGROUP");
        assert_eq!(Name::of(b"").as_bytes(), b"");
        assert_eq!(Name::of(&[b'a'; MAX_NAME]).as_bytes(), [b'A'; MAX_NAME]);
        assert_eq!(Name::of(&[b'a'; MAX_NAME + 1]).as_bytes(), b"");
        assert!(Name::of(b"get").is_in(&["DEL", "GET", "SET"]));
        assert!(!Name::of(b"GETS").is_in(&["DEL", "GET", "SET"]));
    }

    #[test]
    fn words_keep_cursor_positions() {
        let mut c = redis::cmd("hscan");
        c.arg("h").cursor_arg(0).arg("COUNT").arg(5);
        let all: Vec<&[u8]> = words(&c).collect();
        assert_eq!(all, [&b"hscan"[..], b"h", b"", b"COUNT", b"5"]);
        let (upper, rest) = split(&c).unwrap();
        assert_eq!(upper.as_bytes(), b"HSCAN");
        assert_eq!(rest.len(), 4);
        assert!(has_option(words(&c), "count"));
        assert!(!has_option(words(&c), "MATCH"));
        assert!(command_name(&redis::Cmd::new()).is_none());
    }
}
