//! The RESP request parser: turns the bytes a client sent into commands, refusing anything
//! that would cost unbounded memory.
//!
//! Owns [`parse`] and [`ParseLimits`]. Two request forms exist (the Redis protocol spec):
//!
//! ```text
//! multibulk: *<n>\r\n  then n times  $<len>\r\n<len bytes>\r\n
//! inline:    PING\r\n  (words separated by spaces; what nc and redis-benchmark send)
//! ```
//!
//! The parser is incremental: given a buffer that may hold several pipelined commands or half
//! of one, it returns the first complete command and how many bytes it used, or `None` when more
//! input is needed. Every length is checked against a cap before anything is allocated, so a
//! 2 GiB bulk header or a 10-million-element array is refused at once.

use bytes::Bytes;

/// Caps on what one request may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParseLimits {
    /// Most arguments in one command (the command name included).
    pub max_args: usize,
    /// Longest single argument in bytes.
    pub max_bulk: usize,
    /// Longest inline command line in bytes.
    pub max_inline: usize,
    /// Most bytes of one whole command (all its arguments together).
    pub max_request: usize,
}

impl ParseLimits {
    /// The caps for a connection that has not authenticated yet (as Redis: a few small
    /// arguments are all AUTH and HELLO need), so an anonymous client cannot make the server
    /// buffer much.
    pub fn unauthenticated() -> Self {
        ParseLimits {
            max_args: 10,
            max_bulk: 16 * 1024,
            max_inline: 16 * 1024,
            max_request: 64 * 1024,
        }
    }
}

impl Default for ParseLimits {
    fn default() -> Self {
        ParseLimits {
            max_args: 2 * 1000 + 16,
            max_bulk: 1024 * 1024,
            max_inline: 64 * 1024,
            max_request: 16 * 1024 * 1024,
        }
    }
}

/// A request the server refuses; the connection is closed after the error reply, as Redis does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A `*` or `$` header whose number does not parse.
    #[error("Protocol error: invalid {0} length")]
    BadLength(&'static str),
    /// More arguments than allowed.
    #[error("Protocol error: too many arguments ({got}, the limit is {max})")]
    TooManyArgs {
        /// Announced.
        got: u64,
        /// Allowed.
        max: usize,
    },
    /// An argument longer than allowed.
    #[error("Protocol error: argument of {got} bytes (the limit is {max})")]
    BulkTooLong {
        /// Announced.
        got: u64,
        /// Allowed.
        max: usize,
    },
    /// A whole command larger than allowed.
    #[error("Protocol error: request of more than {max} bytes")]
    RequestTooLarge {
        /// Allowed.
        max: usize,
    },
    /// An inline line longer than allowed, or with no end in sight.
    #[error("Protocol error: too big inline request")]
    InlineTooLong,
    /// Something other than `$` where a bulk string must start.
    #[error("Protocol error: expected '$', got '{0}'")]
    ExpectedBulk(char),
    /// A bulk string not followed by CRLF.
    #[error("Protocol error: bulk string not terminated by CRLF")]
    Unterminated,
    /// An inline line with an unbalanced quote.
    #[error("Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
}

/// One parsed command: its arguments, the name first (never empty).
pub type Args = Vec<Bytes>;

/// Parses the first complete command in `buf`.
///
/// Returns `Ok(Some((args, used)))` for a command taking `used` bytes, `Ok(None)` when more
/// input is needed (a line of only CRLF or an empty array is skipped: `args` is then empty),
/// or the protocol error that ends the connection.
///
/// # Errors
/// A header or line that breaks the protocol or one of `limits`.
pub fn parse(buf: &[u8], limits: &ParseLimits) -> Result<Option<(Args, usize)>, ProtocolError> {
    match buf.first() {
        None => Ok(None),
        Some(b'*') => multibulk(buf, limits),
        Some(_) => inline(buf, limits),
    }
}

/// Position of the first CRLF at or after `from`, if any within `max` bytes.
fn line_end(buf: &[u8], from: usize, max: usize) -> Option<usize> {
    let end = buf.len().min(from.saturating_add(max).saturating_add(2));
    buf.get(from..end)?
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|p| from + p)
}

fn number(digits: &[u8], what: &'static str) -> Result<i64, ProtocolError> {
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or(ProtocolError::BadLength(what))
}

fn multibulk(buf: &[u8], limits: &ParseLimits) -> Result<Option<(Args, usize)>, ProtocolError> {
    // A header is at most 20 digits and a sign.
    let Some(end) = line_end(buf, 1, 24) else {
        return if buf.len() > 26 {
            Err(ProtocolError::BadLength("multibulk"))
        } else {
            Ok(None)
        };
    };
    let n = number(&buf[1..end], "multibulk")?;
    let mut pos = end + 2;
    if n <= 0 {
        return Ok(Some((Vec::new(), pos)));
    }
    let n = n.unsigned_abs();
    if n > limits.max_args as u64 {
        return Err(ProtocolError::TooManyArgs {
            got: n,
            max: limits.max_args,
        });
    }
    // Positions first, bytes copied only once the whole command is here: a command that
    // arrives in many reads is re-scanned (headers only), never re-copied.
    let mut ranges = Vec::with_capacity((n as usize).min(64));
    for _ in 0..n {
        let Some(&first) = buf.get(pos) else {
            return Ok(None);
        };
        if first != b'$' {
            return Err(ProtocolError::ExpectedBulk(char::from(first)));
        }
        let Some(end) = line_end(buf, pos + 1, 24) else {
            return if buf.len() > pos + 26 {
                Err(ProtocolError::BadLength("bulk"))
            } else {
                Ok(None)
            };
        };
        let len = number(&buf[pos + 1..end], "bulk")?;
        let len = u64::try_from(len).map_err(|_| ProtocolError::BadLength("bulk"))?;
        if len > limits.max_bulk as u64 {
            return Err(ProtocolError::BulkTooLong {
                got: len,
                max: limits.max_bulk,
            });
        }
        let start = end + 2;
        let stop = start + len as usize;
        if stop + 2 > limits.max_request {
            return Err(ProtocolError::RequestTooLarge {
                max: limits.max_request,
            });
        }
        if buf.len() < stop + 2 {
            return Ok(None);
        }
        if &buf[stop..stop + 2] != b"\r\n" {
            return Err(ProtocolError::Unterminated);
        }
        ranges.push(start..stop);
        pos = stop + 2;
    }
    let args = ranges
        .into_iter()
        .map(|r| Bytes::copy_from_slice(&buf[r]))
        .collect();
    Ok(Some((args, pos)))
}

fn inline(buf: &[u8], limits: &ParseLimits) -> Result<Option<(Args, usize)>, ProtocolError> {
    let newline = buf
        .iter()
        .take(limits.max_inline.saturating_add(1))
        .position(|&b| b == b'\n');
    let Some(nl) = newline else {
        return if buf.len() > limits.max_inline {
            Err(ProtocolError::InlineTooLong)
        } else {
            Ok(None)
        };
    };
    let line = buf[..nl].strip_suffix(b"\r").unwrap_or(&buf[..nl]);
    let args = split_inline(line)?;
    if args.len() > limits.max_args {
        return Err(ProtocolError::TooManyArgs {
            got: args.len() as u64,
            max: limits.max_args,
        });
    }
    Ok(Some((args, nl + 1)))
}

/// Splits an inline line into words, with `"..."` (backslash escapes) and `'...'` quoting as
/// redis-cli writes them.
fn split_inline(line: &[u8]) -> Result<Args, ProtocolError> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < line.len() {
        while i < line.len() && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i == line.len() {
            break;
        }
        let mut word = Vec::new();
        match line[i] {
            q @ (b'"' | b'\'') => {
                i += 1;
                loop {
                    let Some(&c) = line.get(i) else {
                        return Err(ProtocolError::UnbalancedQuotes);
                    };
                    i += 1;
                    if c == q {
                        break;
                    }
                    if c == b'\\' && q == b'"' {
                        let Some(&e) = line.get(i) else {
                            return Err(ProtocolError::UnbalancedQuotes);
                        };
                        i += 1;
                        word.push(match e {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'0' => 0,
                            other => other,
                        });
                    } else {
                        word.push(c);
                    }
                }
                if line.get(i).is_some_and(|c| !c.is_ascii_whitespace()) {
                    return Err(ProtocolError::UnbalancedQuotes);
                }
            }
            _ => {
                while i < line.len() && !line[i].is_ascii_whitespace() {
                    word.push(line[i]);
                    i += 1;
                }
            }
        }
        out.push(Bytes::from(word));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(input: &[u8]) -> Result<Option<(Args, usize)>, ProtocolError> {
        parse(input, &ParseLimits::default())
    }

    fn words(args: &Args) -> Vec<&[u8]> {
        args.iter().map(|a| a.as_ref()).collect()
    }

    #[test]
    fn multibulk_and_pipelining() {
        let input = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n$4\r\nPING\r\n";
        let (args, used) = one(input).expect("ok").expect("complete");
        assert_eq!(words(&args), [&b"GET"[..], b"k"]);
        let (args, rest) = one(&input[used..]).expect("ok").expect("complete");
        assert_eq!(words(&args), [&b"PING"[..]]);
        assert_eq!(used + rest, input.len());
    }

    #[test]
    fn every_prefix_of_a_command_asks_for_more() {
        let input = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nv\r\nx!\r\n";
        for cut in 0..input.len() {
            assert_eq!(one(&input[..cut]), Ok(None), "cut at {cut}");
        }
        let (args, used) = one(input).expect("ok").expect("complete");
        assert_eq!(used, input.len());
        assert_eq!(args[2].as_ref(), b"v\r\nx!", "binary-safe values");
    }

    #[test]
    fn inline_commands() {
        let (args, used) = one(b"PING\r\n").expect("ok").expect("complete");
        assert_eq!((words(&args), used), (vec![&b"PING"[..]], 6));
        let (args, _) = one(b"set k \"a b\\n\" 'c d'\n")
            .expect("ok")
            .expect("complete");
        assert_eq!(words(&args), [&b"set"[..], b"k", b"a b\n", b"c d"]);
        let (args, used) = one(b"\r\n").expect("ok").expect("complete");
        assert!(args.is_empty() && used == 2, "an empty line is skipped");
        assert_eq!(
            one(b"set k \"open\r\n"),
            Err(ProtocolError::UnbalancedQuotes)
        );
    }

    proptest::proptest! {
        /// Any bytes: a command, a request for more, or an error; never a panic, and a
        /// command never claims more bytes than it was given.
        #[test]
        fn arbitrary_bytes_never_panic(input in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            if let Ok(Some((_, used))) = one(&input) {
                proptest::prop_assert!(used <= input.len() && used > 0);
            }
        }

        /// Encoded commands parse back to their arguments, split anywhere.
        #[test]
        fn encoded_commands_round_trip(
            args in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..40), 1..6),
            cut in 0usize..400,
        ) {
            let mut wire = format!("*{}\r\n", args.len()).into_bytes();
            for a in &args {
                wire.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
                wire.extend_from_slice(a);
                wire.extend_from_slice(b"\r\n");
            }
            let cut = cut.min(wire.len());
            if cut < wire.len() {
                proptest::prop_assert_eq!(one(&wire[..cut]), Ok(None));
            }
            let (got, used) = one(&wire).expect("valid").expect("complete");
            proptest::prop_assert_eq!(used, wire.len());
            proptest::prop_assert_eq!(got.iter().map(|b| b.to_vec()).collect::<Vec<_>>(), args);
        }
    }

    #[test]
    fn hostile_headers_are_refused_before_allocating() {
        let e = one(b"*10000000\r\n").expect_err("array");
        assert!(matches!(e, ProtocolError::TooManyArgs { .. }), "{e}");
        let e = one(b"*1\r\n$2147483648\r\n").expect_err("bulk");
        assert!(matches!(e, ProtocolError::BulkTooLong { .. }), "{e}");
        assert_eq!(one(b"*x\r\n"), Err(ProtocolError::BadLength("multibulk")));
        assert_eq!(one(b"*1\r\n$-5\r\n"), Err(ProtocolError::BadLength("bulk")));
        assert_eq!(one(b"*1\r\n+OK\r\n"), Err(ProtocolError::ExpectedBulk('+')));
        assert_eq!(
            one(b"*1\r\n$1\r\nabc\r\n"),
            Err(ProtocolError::Unterminated)
        );
        let long = vec![b'a'; 70 * 1024];
        assert_eq!(one(&long), Err(ProtocolError::InlineTooLong));
        let small = ParseLimits {
            max_request: 60,
            ..ParseLimits::default()
        };
        let many = b"*3\r\n$40\r\n0123456789012345678901234567890123456789\r\n$40\r\n";
        assert_eq!(
            parse(many, &small),
            Err(ProtocolError::RequestTooLarge { max: 60 }),
            "refused from the headers, before the bytes arrive"
        );
        let header = [b"*".as_slice(), &[b'9'; 40]].concat();
        assert_eq!(one(&header), Err(ProtocolError::BadLength("multibulk")));
    }
}
