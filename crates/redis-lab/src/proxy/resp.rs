//! Just enough RESP parsing to find command and reply boundaries (RESP2 and RESP3).

/// The bytes are not RESP; the connection falls back to byte-level forwarding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NotResp;

/// One complete client request at the start of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    /// Bytes the request occupies.
    pub(crate) len: usize,
    /// Number of arguments (0 for an empty inline line or `*0`, which Redis ignores silently).
    pub(crate) argc: usize,
    /// The command name, lowercased (empty when `argc == 0`).
    pub(crate) name: Vec<u8>,
}

/// One complete reply at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reply {
    /// Bytes the reply occupies.
    pub(crate) len: usize,
    /// A RESP3 push (`>`): out of band, answers no request.
    pub(crate) push: bool,
}

/// Longest inline command or header line accepted before declaring the stream not RESP.
const MAX_LINE: usize = 64 * 1024;

/// Finds `\r\n` at or after `from`; returns the index of `\r`.
fn line_end(buf: &[u8], from: usize) -> Result<Option<usize>, NotResp> {
    match buf[from..].windows(2).position(|w| w == b"\r\n") {
        Some(i) => Ok(Some(from + i)),
        None if buf.len() - from > MAX_LINE => Err(NotResp),
        None => Ok(None),
    }
}

fn parse_int(bytes: &[u8]) -> Result<i64, NotResp> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(NotResp)
}

/// A length-prefixed payload (`$`, `!`, `=`) starting at `start`: its end including `\r\n`.
fn payload_end(buf: &[u8], start: usize, len: i64) -> Result<Option<usize>, NotResp> {
    if len < 0 {
        return Ok(Some(start));
    }
    let len = usize::try_from(len).map_err(|_| NotResp)?;
    let stop = start.checked_add(len).ok_or(NotResp)?;
    if buf.len() < stop + 2 {
        return Ok(None);
    }
    if &buf[stop..stop + 2] != b"\r\n" {
        return Err(NotResp);
    }
    Ok(Some(stop + 2))
}

/// Finds request boundaries in a client stream; resumes where it stopped when a request was
/// incomplete, so a large request arriving in many reads is scanned once.
///
/// Every call must pass the buffer starting at the request being parsed (the same start as the
/// previous call that returned `Ok(None)`, possibly with more bytes).
#[derive(Debug, Default)]
pub(crate) struct RequestParser {
    /// Parsed prefix of the current multibulk request.
    pos: usize,
    /// Bulk strings still to read; `None` before the `*N` header was read.
    remaining: Option<usize>,
    argc: usize,
    name: Vec<u8>,
}

impl RequestParser {
    /// Parses the request at the start of `buf`: a RESP array of bulk strings or an inline
    /// command. `Ok(None)` means more bytes are needed.
    pub(crate) fn parse(&mut self, buf: &[u8]) -> Result<Option<Request>, NotResp> {
        match buf.first() {
            None => Ok(None),
            Some(b'*') => self.multibulk(buf),
            Some(_) => inline(buf),
        }
    }

    fn multibulk(&mut self, buf: &[u8]) -> Result<Option<Request>, NotResp> {
        let mut remaining = match self.remaining {
            Some(remaining) => remaining,
            None => {
                let Some(end) = line_end(buf, 1)? else {
                    return Ok(None);
                };
                let count = parse_int(&buf[1..end])?;
                if count <= 0 {
                    return Ok(Some(Request {
                        len: end + 2,
                        argc: 0,
                        name: Vec::new(),
                    }));
                }
                let count = usize::try_from(count).map_err(|_| NotResp)?;
                self.pos = end + 2;
                self.argc = count;
                self.name.clear();
                self.remaining = Some(count);
                count
            }
        };
        while remaining > 0 {
            let pos = self.pos;
            if pos >= buf.len() {
                return Ok(None);
            }
            if buf[pos] != b'$' {
                return Err(NotResp);
            }
            let Some(end) = line_end(buf, pos + 1)? else {
                return Ok(None);
            };
            let len = parse_int(&buf[pos + 1..end])?;
            if len < 0 {
                return Err(NotResp);
            }
            let Some(next) = payload_end(buf, end + 2, len)? else {
                return Ok(None);
            };
            if remaining == self.argc {
                self.name = buf[end + 2..next - 2].to_ascii_lowercase();
            }
            remaining -= 1;
            self.remaining = Some(remaining);
            self.pos = next;
        }
        self.remaining = None;
        Ok(Some(Request {
            len: self.pos,
            argc: self.argc,
            name: std::mem::take(&mut self.name),
        }))
    }
}

/// An inline command: one line, words separated by whitespace.
fn inline(buf: &[u8]) -> Result<Option<Request>, NotResp> {
    let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
        return if buf.len() > MAX_LINE {
            Err(NotResp)
        } else {
            Ok(None)
        };
    };
    let mut words = buf[..nl]
        .split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty());
    let name = words
        .next()
        .map(<[u8]>::to_ascii_lowercase)
        .unwrap_or_default();
    let argc = usize::from(!name.is_empty()) + words.count();
    Ok(Some(Request {
        len: nl + 1,
        argc,
        name,
    }))
}

/// Finds reply boundaries in a server stream (any RESP2 or RESP3 type, attributes included);
/// resumes where it stopped when a reply was incomplete, so a large reply arriving in many
/// reads is scanned once. Same buffer contract as [`RequestParser`].
#[derive(Debug, Default)]
pub(crate) struct ReplyParser {
    /// Parsed prefix of the current reply.
    pos: usize,
    /// Values still to read; 0 before a reply was started.
    pending: u64,
}

impl ReplyParser {
    /// Parses the reply at the start of `buf`. `Ok(None)` means more bytes are needed.
    pub(crate) fn parse(&mut self, buf: &[u8]) -> Result<Option<Reply>, NotResp> {
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        if self.pending == 0 {
            // Aggregates add their children, so no recursion is needed.
            self.pos = 0;
            self.pending = 1;
        }
        while self.pending > 0 {
            let Some((next, children)) = value(buf, self.pos)? else {
                return Ok(None);
            };
            self.pos = next;
            self.pending = self.pending - 1 + children;
        }
        Ok(Some(Reply {
            len: self.pos,
            push: first == b'>',
        }))
    }
}

/// One value's own bytes at `pos` (its header, plus the payload of a string type): where the
/// next value starts, and how many child values follow.
fn value(buf: &[u8], pos: usize) -> Result<Option<(usize, u64)>, NotResp> {
    if pos >= buf.len() {
        return Ok(None);
    }
    let Some(end) = line_end(buf, pos + 1)? else {
        return Ok(None);
    };
    let header = &buf[pos + 1..end];
    let count = |per_entry: u64| -> Result<u64, NotResp> {
        let n = u64::try_from(parse_int(header)?.max(0)).map_err(|_| NotResp)?;
        n.checked_mul(per_entry).ok_or(NotResp)
    };
    let next = end + 2;
    Ok(Some(match buf[pos] {
        b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => (next, 0),
        b'$' | b'!' | b'=' => match payload_end(buf, next, parse_int(header)?)? {
            Some(stop) => (stop, 0),
            None => return Ok(None),
        },
        b'*' | b'~' | b'>' => (next, count(1)?),
        b'%' => (next, count(2)?),
        // An attribute map is followed by the value it annotates.
        b'|' => (next, count(2)? + 1),
        _ => return Err(NotResp),
    }))
}

/// Parses one request from scratch (tests and simple callers).
#[cfg(test)]
fn parse_request(buf: &[u8]) -> Result<Option<Request>, NotResp> {
    RequestParser::default().parse(buf)
}

/// Parses one reply from scratch (tests and simple callers).
#[cfg(test)]
fn parse_reply(buf: &[u8]) -> Result<Option<Reply>, NotResp> {
    ReplyParser::default().parse(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multibulk_request_needs_every_byte() {
        let full = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
        for cut in 0..full.len() {
            assert_eq!(parse_request(&full[..cut]), Ok(None), "prefix {cut}");
        }
        let req = parse_request(full).unwrap().unwrap();
        assert_eq!(
            (req.len, req.argc, req.name.as_slice()),
            (full.len(), 2, &b"get"[..])
        );
    }

    #[test]
    fn inline_and_empty_requests() {
        let req = parse_request(b"PING hello\r\nrest").unwrap().unwrap();
        assert_eq!(
            (req.len, req.argc, req.name.as_slice()),
            (12, 2, &b"ping"[..])
        );
        let empty = parse_request(b"\r\n").unwrap().unwrap();
        assert_eq!((empty.len, empty.argc), (2, 0));
        assert_eq!(parse_request(b"*1\r\n+x\r\n"), Err(NotResp));
    }

    #[test]
    fn replies_of_every_type() {
        let cases: &[&[u8]] = &[
            b"+OK\r\n",
            b"-ERR x\r\n",
            b":12\r\n",
            b"$-1\r\n",
            b"$3\r\nabc\r\n",
            b"*-1\r\n",
            b"*2\r\n$1\r\na\r\n:1\r\n",
            b"_\r\n",
            b",1.5\r\n",
            b"#t\r\n",
            b"(123\r\n",
            b"!3\r\nerr\r\n",
            b"=7\r\ntxt:abc\r\n",
            b"%1\r\n+k\r\n*1\r\n:1\r\n",
            b"~2\r\n+a\r\n+b\r\n",
            b"|1\r\n+key\r\n+val\r\n:5\r\n",
        ];
        for case in cases {
            for cut in 0..case.len() {
                assert_eq!(parse_reply(&case[..cut]), Ok(None), "{case:?} prefix {cut}");
            }
            let mut with_tail = case.to_vec();
            with_tail.extend_from_slice(b":9\r\n");
            assert_eq!(
                parse_reply(&with_tail),
                Ok(Some(Reply {
                    len: case.len(),
                    push: false
                })),
                "{case:?}"
            );
        }
        assert_eq!(
            parse_reply(b">2\r\n+message\r\n+x\r\n"),
            Ok(Some(Reply {
                len: 18,
                push: true
            }))
        );
        assert_eq!(parse_reply(b"?\r\n"), Err(NotResp));
    }

    #[test]
    fn parsers_resume_across_reads() {
        let reply = b"*3\r\n$5\r\nhello\r\n*2\r\n:1\r\n:2\r\n+end\r\n";
        let mut parser = ReplyParser::default();
        for cut in 0..reply.len() {
            assert_eq!(parser.parse(&reply[..cut]), Ok(None), "prefix {cut}");
        }
        assert_eq!(
            parser.parse(reply),
            Ok(Some(Reply {
                len: reply.len(),
                push: false
            }))
        );
        assert_eq!(
            parser.parse(b":7\r\n"),
            Ok(Some(Reply {
                len: 4,
                push: false
            }))
        );

        let request = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nvalue\r\n";
        let mut parser = RequestParser::default();
        for cut in 0..request.len() {
            assert_eq!(parser.parse(&request[..cut]), Ok(None), "prefix {cut}");
        }
        let parsed = parser.parse(request).unwrap().unwrap();
        assert_eq!(
            (parsed.len, parsed.argc, parsed.name.as_slice()),
            (request.len(), 3, &b"set"[..])
        );
        let next = parser.parse(b"*1\r\n$4\r\nPING\r\n").unwrap().unwrap();
        assert_eq!(next.name, b"ping");
    }
}
