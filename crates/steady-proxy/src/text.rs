//! Small text formatters for the request path: hex, integers and IPv4 addresses written
//! straight into a byte buffer, without `core::fmt`'s dynamic dispatch and padding logic
//! (which cost several hundred instructions per value; these are a few dozen).

use std::net::{IpAddr, SocketAddr};

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Each byte's two lowercase hex digits: one load and one store per byte.
const HEX_PAIRS: [[u8; 2]; 256] = {
    let mut pairs = [[0; 2]; 256];
    let mut i = 0;
    while i < 256 {
        pairs[i] = [HEX[i >> 4], HEX[i & 0xf]];
        i += 1;
    }
    pairs
};

/// Each IPv4 octet's digits followed by a `.`, padded to four bytes, and how many of
/// them count: `(*b"7.\0\0", 2)`.
const OCTETS: [([u8; 4], usize); 256] = {
    let mut octets = [([0; 4], 0); 256];
    let mut i = 0;
    while i < 256 {
        let d = [
            b'0' + (i / 100) as u8,
            b'0' + (i / 10 % 10) as u8,
            b'0' + (i % 10) as u8,
        ];
        octets[i] = if i >= 100 {
            ([d[0], d[1], d[2], b'.'], 4)
        } else if i >= 10 {
            ([d[1], d[2], b'.', 0], 3)
        } else {
            ([d[2], b'.', 0, 0], 2)
        };
        i += 1;
    }
    octets
};

/// Where formatted bytes go: a `Vec`, or a [`Stack`] buffer for short values.
pub(crate) trait Out {
    fn put(&mut self, bytes: &[u8]);

    /// Appends the first `len` bytes of `bytes` (a writer with room at hand copies all
    /// `N` in one fixed-size move and counts `len`).
    #[inline]
    fn put_head<const N: usize>(&mut self, bytes: &[u8; N], len: usize) {
        self.put(&bytes[..len.min(N)]);
    }
}

impl Out for Vec<u8> {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// A fixed buffer on the stack for a short value (an address for a header), so making
/// it allocates nothing; bytes past its end are cut off.
pub(crate) struct Stack<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> Stack<N> {
    pub(crate) fn new() -> Self {
        Stack {
            buf: [0; N],
            len: 0,
        }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// `value`'s `Display` text (cut off at `N` bytes).
    fn display(value: &dyn std::fmt::Display) -> Self {
        use std::fmt::Write as _;
        let mut out = Stack::new();
        let _ = write!(out, "{value}");
        out
    }
}

impl<const N: usize> Out for Stack<N> {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(N - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
    }
}

impl<const N: usize> std::fmt::Write for Stack<N> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.put(s.as_bytes());
        Ok(())
    }
}

/// Writes `bytes` as lowercase hex into `out`, which is exactly twice as long.
pub(crate) fn hex_into(bytes: &[u8], out: &mut [u8]) {
    debug_assert_eq!(out.len(), 2 * bytes.len());
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair.copy_from_slice(&HEX_PAIRS[usize::from(*b)]);
    }
}

/// Appends `n` in lowercase hex without leading zeros (`0` for zero): a chunk size.
pub(crate) fn push_hex(out: &mut impl Out, n: u64) {
    let len = (u64::BITS - n.leading_zeros()).div_ceil(4).max(1) as usize;
    let mut digits = [0u8; 16];
    for (i, digit) in digits[..len].iter_mut().rev().enumerate() {
        *digit = HEX[((n >> (4 * i)) & 0xf) as usize];
    }
    out.put(&digits[..len]);
}

/// Appends `n` in decimal.
pub(crate) fn push_u64(out: &mut impl Out, n: u64) {
    out.put(itoa::Buffer::new().format(n).as_bytes());
}

/// Appends the last `W` decimal digits of `n`, zero-padded (`push_padded::<3>(out, 7)`
/// appends `007`): the fraction of a time or a duration.
pub(crate) fn push_padded<const W: usize>(out: &mut impl Out, n: u32) {
    let mut digits = [b'0'; W];
    let mut rest = n;
    for digit in digits.iter_mut().rev() {
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    out.put(&digits);
}

/// Appends `ip` as text (dotted quad for IPv4; the standard form for IPv6).
pub(crate) fn push_ip(out: &mut impl Out, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets().map(|o| &OCTETS[usize::from(o)]);
            for (digits, len) in [a, b, c] {
                out.put_head(digits, *len);
            }
            // The last without its dot.
            out.put_head(&d.0, d.1 - 1);
        }
        // Rare enough on the request path to leave to the library.
        IpAddr::V6(v6) => out.put(Stack::<64>::display(&v6).as_bytes()),
    }
}

/// Appends `addr` as `ip:port` (`[ip]:port` for IPv6), as `SocketAddr`'s `Display`.
pub(crate) fn push_socket_addr(out: &mut impl Out, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(_) => {
            push_ip(out, addr.ip());
            out.put(b":");
            push_u64(out, u64::from(addr.port()));
        }
        SocketAddr::V6(v6) => out.put(Stack::<80>::display(&v6).as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_has_no_leading_zeros() {
        for n in [0u64, 1, 9, 15, 16, 255, 256, 4096, 0xabcdef, u64::MAX] {
            let mut out = Vec::new();
            push_hex(&mut out, n);
            assert_eq!(out, format!("{n:x}").as_bytes());
        }
    }

    #[test]
    fn formats_like_the_standard_library() {
        for addr in [
            "127.0.0.1:8080",
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "10.20.30.4:1",
            "[::1]:443",
            "[2001:db8::1%3]:80",
            "[::ffff:1.2.3.4]:9",
        ] {
            let addr: SocketAddr = addr.parse().unwrap();
            let mut out = Vec::new();
            push_socket_addr(&mut out, addr);
            assert_eq!(String::from_utf8(out).unwrap(), addr.to_string());
            let mut stack = Stack::<64>::new();
            push_ip(&mut stack, addr.ip());
            assert_eq!(stack.as_bytes(), addr.ip().to_string().as_bytes());
            let mut out = Vec::new();
            push_ip(&mut out, addr.ip());
            assert_eq!(String::from_utf8(out).unwrap(), addr.ip().to_string());
        }
        for o in 0..=255u8 {
            let ip = IpAddr::from([o, 0, 255 - o, o]);
            let mut out = Vec::new();
            push_ip(&mut out, ip);
            assert_eq!(String::from_utf8(out).unwrap(), ip.to_string());
        }
        for n in [
            0u64,
            7,
            9,
            10,
            99,
            100,
            101,
            999,
            1000,
            12_345,
            10u64.pow(19),
            u64::MAX,
        ] {
            let mut out = Vec::new();
            push_u64(&mut out, n);
            assert_eq!(String::from_utf8(out).unwrap(), n.to_string());
        }
        for n in [0u32, 7, 42, 999, 123_456, 999_999] {
            let mut out = Vec::new();
            push_padded::<6>(&mut out, n);
            assert_eq!(String::from_utf8(out).unwrap(), format!("{n:06}"));
        }
        let mut out = Vec::new();
        push_padded::<3>(&mut out, 7);
        assert_eq!(out, b"007");
        let mut out = [0u8; 6];
        hex_into(&[0x00, 0xaf, 0x3c], &mut out);
        assert_eq!(&out, b"00af3c");
        let all: Vec<u8> = (0..=255).collect();
        let mut out = vec![0u8; 512];
        hex_into(&all, &mut out);
        let expected: String = all.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }
}
