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

/// Parses the request at the start of `buf`: a RESP array of bulk strings or an inline command.
/// `Ok(None)` means more bytes are needed.
pub(crate) fn parse_request(buf: &[u8]) -> Result<Option<Request>, NotResp> {
    match buf.first() {
        None => Ok(None),
        Some(b'*') => parse_multibulk(buf),
        Some(_) => {
            let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
                return if buf.len() > MAX_LINE { Err(NotResp) } else { Ok(None) };
            };
            let line = &buf[..nl];
            let mut words = line.split(|b| b.is_ascii_whitespace()).filter(|w| !w.is_empty());
            let name = words.next().map(<[u8]>::to_ascii_lowercase).unwrap_or_default();
            let argc = usize::from(!name.is_empty()) + words.count();
            Ok(Some(Request { len: nl + 1, argc, name }))
        }
    }
}

fn parse_multibulk(buf: &[u8]) -> Result<Option<Request>, NotResp> {
    let Some(end) = line_end(buf, 1)? else {
        return Ok(None);
    };
    let count = parse_int(&buf[1..end])?;
    let mut pos = end + 2;
    if count <= 0 {
        return Ok(Some(Request { len: pos, argc: 0, name: Vec::new() }));
    }
    let argc = usize::try_from(count).map_err(|_| NotResp)?;
    let mut name = Vec::new();
    for i in 0..argc {
        if pos >= buf.len() {
            return Ok(None);
        }
        if buf[pos] != b'$' {
            return Err(NotResp);
        }
        let Some(end) = line_end(buf, pos + 1)? else {
            return Ok(None);
        };
        let len = usize::try_from(parse_int(&buf[pos + 1..end])?).map_err(|_| NotResp)?;
        let start = end + 2;
        let Some(stop) = start.checked_add(len) else {
            return Err(NotResp);
        };
        if buf.len() < stop + 2 {
            return Ok(None);
        }
        if &buf[stop..stop + 2] != b"\r\n" {
            return Err(NotResp);
        }
        if i == 0 {
            name = buf[start..stop].to_ascii_lowercase();
        }
        pos = stop + 2;
    }
    Ok(Some(Request { len: pos, argc, name }))
}

/// Parses the reply at the start of `buf` (any RESP2 or RESP3 type, attributes included).
/// `Ok(None)` means more bytes are needed.
pub(crate) fn parse_reply(buf: &[u8]) -> Result<Option<Reply>, NotResp> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    // Values still to read; aggregates add their children, so no recursion is needed.
    let mut pending: u64 = 1;
    let mut pos = 0;
    while pending > 0 {
        if pos >= buf.len() {
            return Ok(None);
        }
        let kind = buf[pos];
        let Some(end) = line_end(buf, pos + 1)? else {
            return Ok(None);
        };
        let header = &buf[pos + 1..end];
        pos = end + 2;
        pending -= 1;
        match kind {
            b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => {}
            b'$' | b'!' | b'=' => {
                let len = parse_int(header)?;
                if len >= 0 {
                    let len = usize::try_from(len).map_err(|_| NotResp)?;
                    let stop = pos.checked_add(len).ok_or(NotResp)?;
                    if buf.len() < stop + 2 {
                        return Ok(None);
                    }
                    if &buf[stop..stop + 2] != b"\r\n" {
                        return Err(NotResp);
                    }
                    pos = stop + 2;
                }
            }
            b'*' | b'~' | b'>' => {
                let count = parse_int(header)?;
                pending += u64::try_from(count.max(0)).map_err(|_| NotResp)?;
            }
            b'%' => {
                let count = parse_int(header)?;
                pending += 2 * u64::try_from(count.max(0)).map_err(|_| NotResp)?;
            }
            // An attribute map is followed by the value it annotates.
            b'|' => {
                let count = parse_int(header)?;
                pending += 2 * u64::try_from(count.max(0)).map_err(|_| NotResp)? + 1;
            }
            _ => return Err(NotResp),
        }
    }
    Ok(Some(Reply { len: pos, push: first == b'>' }))
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
        assert_eq!((req.len, req.argc, req.name.as_slice()), (full.len(), 2, &b"get"[..]));
    }

    #[test]
    fn inline_and_empty_requests() {
        let req = parse_request(b"PING hello\r\nrest").unwrap().unwrap();
        assert_eq!((req.len, req.argc, req.name.as_slice()), (12, 2, &b"ping"[..]));
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
                Ok(Some(Reply { len: case.len(), push: false })),
                "{case:?}"
            );
        }
        assert_eq!(
            parse_reply(b">2\r\n+message\r\n+x\r\n"),
            Ok(Some(Reply { len: 20, push: true }))
        );
        assert_eq!(parse_reply(b"?\r\n"), Err(NotResp));
    }
}
