//! An incremental RESP decoder over a [`BytesMut`] read buffer.
//!
//! # Behavior
//! - The RESP2 types (`+` simple string, `-` error, `:` integer, `$` bulk string, `*` array,
//!   nested arrays, `$-1` and `*-1` nil) are decoded directly, in one pass over the buffer.
//! - Every other type (RESP3's maps, sets, doubles, pushes, ...) makes the whole reply go
//!   through redis-rs's own parser ([`redis::parse_redis_value`]) once it is complete, and so
//!   does every error reply (redis-rs's `ServerError` cannot be built outside redis-rs): the
//!   value is always the one redis-rs would have produced.
//! - A reply that is not complete yet gives `Ok(None)` and consumes nothing. [`Decoder`]
//!   remembers how far it checked a partial reply, so a large reply arriving in many reads is
//!   scanned once, not once per read.
//! - Hostile input gives an error, never a panic or an allocation larger than what arrived:
//!   nesting deeper than redis-rs allows ([`MAX_DEPTH`]), bulk strings longer than
//!   [`MAX_BULK_LEN`], aggregates of more than [`MAX_AGGREGATE_LEN`] elements, lines longer
//!   than [`MAX_LINE_LEN`], negative lengths where RESP has none, and unknown type bytes.
//!   (redis-rs would wait for more bytes on some of these; an error is the better answer.)

use bytes::{Buf, BytesMut};
use redis::{ParsingError, RedisError, RedisResult, Value};

/// The deepest nesting redis-rs's parser accepts (a top-level reply is at depth 1).
pub const MAX_DEPTH: usize = 100;
/// The longest bulk string accepted: Redis's default `proto-max-bulk-len` (512 MiB).
pub const MAX_BULK_LEN: usize = 512 * 1024 * 1024;
/// The most elements (keys and values counted apart in a map) one aggregate may announce.
pub const MAX_AGGREGATE_LEN: usize = u32::MAX as usize;
/// The longest line (simple string, error, integer, length header) accepted.
pub const MAX_LINE_LEN: usize = 1024 * 1024;

/// Decodes one complete reply from the front of `buf`, consuming it; `Ok(None)` (nothing
/// consumed) when `buf` does not hold a complete reply yet.
///
/// Stateless: a partial reply is checked again from its start on the next call. The
/// connection's reader uses [`Decoder`], which is not.
///
/// # Errors
/// A reply that is not valid RESP (see the module docs): the stream cannot be read further.
pub fn decode(buf: &mut BytesMut) -> RedisResult<Option<Value>> {
    Decoder::default().decode(buf)
}

/// An incremental decoder: [`decode`] that remembers how much of a partial reply it checked.
///
/// Use one per byte stream, and give it the same buffer (grown only at its end) every call.
#[derive(Debug, Default)]
pub struct Decoder {
    /// The framing of a reply that did not arrive whole, as far as it was checked.
    partial: Option<Scan>,
}

impl Decoder {
    /// Decodes one complete reply from the front of `buf`, consuming it; `Ok(None)` (nothing
    /// consumed) when `buf` does not hold a complete reply yet.
    ///
    /// # Errors
    /// A reply that is not valid RESP (see the module docs): the stream cannot be read further.
    pub fn decode(&mut self, buf: &mut BytesMut) -> RedisResult<Option<Value>> {
        let mut scan = match self.partial.take() {
            Some(scan) => scan,
            None => {
                let mut pos = 0;
                match build(buf, &mut pos, 1) {
                    Ok(value) => {
                        buf.advance(pos);
                        return Ok(Some(value));
                    }
                    Err(Stop::Invalid(err)) => return Err(err),
                    Err(Stop::Incomplete | Stop::Foreign) => Scan::default(),
                }
            }
        };
        let Some(end) = scan.resume(buf)? else {
            self.partial = Some(scan);
            return Ok(None);
        };
        let frame = &buf[..end];
        let mut pos = 0;
        let value = match build(frame, &mut pos, 1) {
            Ok(value) if pos == end => value,
            Ok(_) | Err(Stop::Incomplete) => {
                return Err(invalid("reply framing disagrees with its contents"));
            }
            Err(Stop::Foreign) => redis::parse_redis_value(frame)?,
            Err(Stop::Invalid(err)) => return Err(err),
        };
        buf.advance(end);
        Ok(Some(value))
    }
}

/// Why [`build`] stopped without a value.
enum Stop {
    /// The buffer ends before the reply does.
    Incomplete,
    /// The reply holds a type left to redis-rs's parser.
    Foreign,
    /// The bytes are not valid RESP.
    Invalid(RedisError),
}

impl From<RedisError> for Stop {
    fn from(err: RedisError) -> Self {
        Stop::Invalid(err)
    }
}

/// Decodes the RESP2 value at `input[*pos..]` (at nesting `depth`), moving `pos` past it.
fn build(input: &[u8], pos: &mut usize, depth: usize) -> Result<Value, Stop> {
    let start = *pos;
    let tag = *input.get(start).ok_or(Stop::Incomplete)?;
    if depth > MAX_DEPTH {
        return Err(invalid("Maximum recursion depth exceeded").into());
    }
    match tag {
        b'+' | b'-' | b':' | b'$' | b'*' => {}
        b'%' | b'|' | b'~' | b'_' | b',' | b'#' | b'!' | b'=' | b'(' | b'>' => {
            return Err(Stop::Foreign);
        }
        other => return Err(unknown_type(other).into()),
    }
    let cr = line_end(input, start + 1)?.ok_or(Stop::Incomplete)?;
    let line = &input[start + 1..cr];
    *pos = cr + 2;
    match tag {
        b'+' => simple_string(line).map_err(Stop::from),
        b':' => Ok(Value::Int(parse_int(line)?)),
        // Error replies are rare: redis-rs builds them (its `ServerError` is sealed).
        b'-' => redis::parse_redis_value(&input[start..*pos]).map_err(Stop::from),
        b'$' => {
            let Some(len) = bulk_len(tag, parse_int(line)?)? else {
                return Ok(Value::Nil);
            };
            let body = *pos;
            let Some(end) = body.checked_add(len).filter(|end| end + 2 <= input.len()) else {
                return Err(Stop::Incomplete);
            };
            if &input[end..end + 2] != b"\r\n" {
                return Err(invalid("bulk string not followed by CRLF").into());
            }
            *pos = end + 2;
            Ok(Value::BulkString(input[body..end].to_vec()))
        }
        _ => {
            let Some(len) = aggregate_len(tag, parse_int(line)?)? else {
                return Ok(Value::Nil);
            };
            // Every element takes at least three bytes (`+\r\n`): a length the buffer cannot
            // hold yet allocates nothing.
            if (input.len() - *pos) / 3 < len {
                return Err(Stop::Incomplete);
            }
            let mut items = Vec::with_capacity(len);
            for _ in 0..len {
                items.push(build(input, pos, depth + 1)?);
            }
            Ok(Value::Array(items))
        }
    }
}

/// The framing of a partial reply: where the next value starts, and how many elements each
/// open aggregate still waits for (outermost first).
#[derive(Debug, Default)]
struct Scan {
    pos: usize,
    open: Vec<usize>,
}

impl Scan {
    /// Checks the framing of `input` from where it stopped; the length of the reply once it
    /// is complete. Knows every type redis-rs knows.
    fn resume(&mut self, input: &[u8]) -> RedisResult<Option<usize>> {
        loop {
            let start = self.pos;
            let Some(&tag) = input.get(start) else {
                return Ok(None);
            };
            if self.open.len() + 1 > MAX_DEPTH {
                return Err(invalid("Maximum recursion depth exceeded"));
            }
            let Some(cr) = line_end(input, start + 1)? else {
                return Ok(None);
            };
            let line = &input[start + 1..cr];
            let mut end = cr + 2;
            let children = match tag {
                b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => 0,
                b'$' | b'!' | b'=' => {
                    if let Some(len) = bulk_len(tag, parse_int(line)?)? {
                        let Some(body_end) = end.checked_add(len).filter(|e| e + 2 <= input.len())
                        else {
                            return Ok(None);
                        };
                        if &input[body_end..body_end + 2] != b"\r\n" {
                            return Err(invalid("bulk string not followed by CRLF"));
                        }
                        end = body_end + 2;
                    }
                    0
                }
                _ => aggregate_len(tag, parse_int(line)?)?.unwrap_or(0),
            };
            self.pos = end;
            if children > 0 {
                self.open.push(children);
                continue;
            }
            // A value ended: so may the aggregates it closes.
            loop {
                let Some(remaining) = self.open.last_mut() else {
                    return Ok(Some(self.pos));
                };
                *remaining -= 1;
                if *remaining > 0 {
                    break;
                }
                self.open.pop();
            }
        }
    }
}

/// The byte length of a blob (`$`, `!`, `=`) announced as `n`; `None` for a nil bulk string.
fn bulk_len(tag: u8, n: i64) -> RedisResult<Option<usize>> {
    if n < 0 {
        return if tag == b'$' {
            Ok(None)
        } else {
            Err(invalid("negative blob length"))
        };
    }
    match usize::try_from(n) {
        Ok(len) if len <= MAX_BULK_LEN => Ok(Some(len)),
        _ => Err(invalid("bulk string longer than 512 MiB")),
    }
}

/// The element count of an aggregate announced as `n` (maps and attributes counted as
/// redis-rs reads them); `None` for a nil array, `Some(0)` for what has no elements.
fn aggregate_len(tag: u8, n: i64) -> RedisResult<Option<usize>> {
    let elements = match tag {
        b'*' | b'~' if n < 0 => return Ok(None),
        b'>' if n <= 0 => return Ok(Some(0)),
        b'%' | b'|' if n < 0 => return Err(invalid("negative map length")),
        b'*' | b'~' | b'>' => n.unsigned_abs(),
        b'%' => n.unsigned_abs().saturating_mul(2),
        b'|' => n.unsigned_abs().saturating_mul(2).saturating_add(1),
        other => return Err(unknown_type(other)),
    };
    match usize::try_from(elements) {
        Ok(len) if len <= MAX_AGGREGATE_LEN => Ok(Some(len)),
        _ => Err(invalid("aggregate with too many elements")),
    }
}

/// The index of the `\r` of the first CRLF at or after `from`; `None` when none arrived yet.
fn line_end(input: &[u8], from: usize) -> RedisResult<Option<usize>> {
    let mut at = from;
    while let Some(offset) = input.get(at..).and_then(find_cr) {
        let cr = at + offset;
        match input.get(cr + 1) {
            Some(b'\n') => return Ok(Some(cr)),
            Some(_) => at = cr + 1,
            None => break,
        }
    }
    if input.len().saturating_sub(from) > MAX_LINE_LEN {
        return Err(invalid("line longer than 1 MiB"));
    }
    Ok(None)
}

/// The index of the first `\r` in `bytes`.
fn find_cr(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\r')
}

/// A `+` line as redis-rs reads it: `OK` is [`Value::Okay`].
fn simple_string(line: &[u8]) -> RedisResult<Value> {
    if line == b"OK" {
        return Ok(Value::Okay);
    }
    let text = std::str::from_utf8(line).map_err(|e| RedisError::from(ParsingError::from(e)))?;
    Ok(Value::SimpleString(text.to_owned()))
}

/// An integer line as redis-rs reads it (UTF-8, surrounding whitespace trimmed, `i64`).
fn parse_int(line: &[u8]) -> RedisResult<i64> {
    let (negative, digits) = match line.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, line),
    };
    // Fast path: up to 18 digits cannot overflow.
    if !digits.is_empty() && digits.len() <= 18 && digits.iter().all(u8::is_ascii_digit) {
        let n = digits
            .iter()
            .fold(0i64, |n, &d| n * 10 + i64::from(d - b'0'));
        return Ok(if negative { -n } else { n });
    }
    std::str::from_utf8(line)
        .map_err(|e| RedisError::from(ParsingError::from(e)))?
        .trim()
        .parse::<i64>()
        .map_err(|_| invalid("Expected integer, got garbage"))
}

fn unknown_type(tag: u8) -> RedisError {
    RedisError::from(ParsingError::from(format!(
        "Unexpected reply type byte {tag:#04x}"
    )))
}

fn invalid(what: &'static str) -> RedisError {
    RedisError::from(ParsingError::from(what))
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
