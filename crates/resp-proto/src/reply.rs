//! RESP replies and their encoding in RESP2 and RESP3.
//!
//! Owns [`Reply`] and [`Reply::encode`]. The wire forms (Redis protocol spec):
//!
//! ```text
//! +OK\r\n   -ERR msg\r\n   :42\r\n   $3\r\nabc\r\n   *2\r\n<elem><elem>
//! null:   RESP2 $-1\r\n (bulk) / *-1\r\n (array);  RESP3 _\r\n
//! map:    RESP2 a flat array of 2n elements;       RESP3 %n\r\n<k><v>...
//! double: RESP2 a bulk string;                     RESP3 ,1.5\r\n
//! ```
//!
//! Hand-written: the encoder is these few lines, and owning it keeps the replies of both
//! protocol versions in one match.

use bytes::{BufMut, Bytes, BytesMut};

/// Which protocol version the connection speaks (`HELLO 3` switches to RESP3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// RESP2, every connection's start.
    Resp2,
    /// RESP3.
    Resp3,
}

/// One reply.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// `+OK`-style status.
    Simple(&'static str),
    /// A status built at run time (`+QUEUED` is static; TYPE answers are static too).
    Status(String),
    /// `-CODE message`: the text after `-`, code included.
    Error(String),
    /// `:n`.
    Int(i64),
    /// `$len` bytes.
    Bulk(Bytes),
    /// The null bulk string (absent key).
    Nil,
    /// The null array (EXEC aborted by WATCH).
    NilArray,
    /// `*n` elements.
    Array(Vec<Reply>),
    /// A map (RESP3 `%`), a flat array in RESP2.
    Map(Vec<(Reply, Reply)>),
    /// A double (RESP3 `,`), a bulk string in RESP2.
    Double(f64),
}

impl Reply {
    /// `+OK`.
    pub const OK: Reply = Reply::Simple("OK");

    /// An error reply with the `ERR` code.
    pub fn err(msg: impl std::fmt::Display) -> Reply {
        Reply::Error(format!("ERR {msg}"))
    }

    /// A bulk string of any bytes.
    pub fn bulk(b: impl Into<Bytes>) -> Reply {
        Reply::Bulk(b.into())
    }

    /// Whether this is an error reply (for the error counter).
    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }

    /// Appends the encoding of `self` in `proto` to `out`.
    pub fn encode(&self, proto: Proto, out: &mut BytesMut) {
        match self {
            Reply::Simple(s) => line(out, b'+', s.as_bytes()),
            Reply::Status(s) => line(out, b'+', s.as_bytes()),
            Reply::Error(s) => {
                // An error line must not break the framing.
                let clean: Vec<u8> = s
                    .bytes()
                    .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b })
                    .collect();
                line(out, b'-', &clean);
            }
            Reply::Int(n) => line(out, b':', n.to_string().as_bytes()),
            Reply::Bulk(b) => {
                line(out, b'$', b.len().to_string().as_bytes());
                out.put_slice(b);
                out.put_slice(b"\r\n");
            }
            Reply::Nil => match proto {
                Proto::Resp2 => out.put_slice(b"$-1\r\n"),
                Proto::Resp3 => out.put_slice(b"_\r\n"),
            },
            Reply::NilArray => match proto {
                Proto::Resp2 => out.put_slice(b"*-1\r\n"),
                Proto::Resp3 => out.put_slice(b"_\r\n"),
            },
            Reply::Array(items) => {
                line(out, b'*', items.len().to_string().as_bytes());
                for i in items {
                    i.encode(proto, out);
                }
            }
            Reply::Map(pairs) => {
                match proto {
                    Proto::Resp2 => line(out, b'*', (2 * pairs.len()).to_string().as_bytes()),
                    Proto::Resp3 => line(out, b'%', pairs.len().to_string().as_bytes()),
                }
                for (k, v) in pairs {
                    k.encode(proto, out);
                    v.encode(proto, out);
                }
            }
            Reply::Double(d) => {
                let text = format_double(*d);
                match proto {
                    Proto::Resp2 => Reply::Bulk(Bytes::from(text)).encode(proto, out),
                    Proto::Resp3 => line(out, b',', text.as_bytes()),
                }
            }
        }
    }
}

/// A double as Redis prints it: fixed notation, no trailing zeros, `inf` / `-inf`. Redis
/// computes in `long double`, where 0.1 + 0.2 prints as `0.3`; in `f64` that sum is
/// 0.30000000000000004, so a value within a few ulps of its 15-digit rounding prints as that
/// rounding.
pub fn format_double(d: f64) -> String {
    if d.is_infinite() {
        return if d > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    let rounded: f64 = format!("{d:.14e}").parse().unwrap_or(d);
    let v = if (rounded - d).abs() <= d.abs() * 4.0 * f64::EPSILON {
        rounded
    } else {
        d
    };
    let s = format!("{v}");
    s.strip_suffix(".0").map(str::to_owned).unwrap_or(s)
}

fn line(out: &mut BytesMut, tag: u8, body: &[u8]) {
    out.reserve(body.len() + 3);
    out.put_u8(tag);
    out.put_slice(body);
    out.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(r: &Reply, p: Proto) -> Vec<u8> {
        let mut b = BytesMut::new();
        r.encode(p, &mut b);
        b.to_vec()
    }

    #[test]
    fn both_protocols() {
        assert_eq!(enc(&Reply::OK, Proto::Resp2), b"+OK\r\n");
        assert_eq!(enc(&Reply::Int(-3), Proto::Resp2), b":-3\r\n");
        assert_eq!(enc(&Reply::bulk("ab"), Proto::Resp2), b"$2\r\nab\r\n");
        assert_eq!(enc(&Reply::Nil, Proto::Resp2), b"$-1\r\n");
        assert_eq!(enc(&Reply::Nil, Proto::Resp3), b"_\r\n");
        assert_eq!(enc(&Reply::NilArray, Proto::Resp2), b"*-1\r\n");
        let m = Reply::Map(vec![(Reply::bulk("proto"), Reply::Int(3))]);
        assert_eq!(enc(&m, Proto::Resp3), b"%1\r\n$5\r\nproto\r\n:3\r\n");
        assert_eq!(enc(&m, Proto::Resp2), b"*2\r\n$5\r\nproto\r\n:3\r\n");
        assert_eq!(enc(&Reply::Double(1.5), Proto::Resp3), b",1.5\r\n");
        assert_eq!(enc(&Reply::Double(3.0), Proto::Resp2), b"$1\r\n3\r\n");
        assert_eq!(enc(&Reply::err("a\r\nb"), Proto::Resp2), b"-ERR a  b\r\n");
        assert_eq!(format_double(0.1 + 0.2), "0.3");
        assert_eq!(format_double(10.5), "10.5");
        assert_eq!(format_double(1e21), "1000000000000000000000");
        assert_eq!(format_double(1.2345678901234567), "1.2345678901234567");
        assert_eq!(format_double(-3.0), "-3");
    }
}
