//! A minimal DNS message codec (RFC 1035) for the supervisor's responder and the library's
//! `res_query`/`res_send` answers: read the question of a query, build an answer with one
//! address or none. Pure functions on bytes.
use std::net::IpAddr;

/// QTYPE A: the IPv4 placeholder is the answer.
pub const TYPE_A: u16 = 1;
/// QTYPE AAAA: the IPv6 placeholder is the answer.
pub const TYPE_AAAA: u16 = 28;
/// QCLASS IN, the only class a placeholder is an address in.
pub const CLASS_IN: u16 = 1;

/// What the responder needs from a query to answer it.
#[derive(Debug, PartialEq, Eq)]
pub struct Question {
    /// Message ID, copied into the answer so the client matches it.
    pub id: u16,
    /// Lower case, no trailing dot. Labels may hold any UTF-8 except `.`: whether it is a
    /// name tsproxy answers for is `Config::is_tailnet_name`'s decision, not the codec's.
    pub name: String,
    /// QTYPE (`TYPE_A`, `TYPE_AAAA`, or anything else, which gets no data).
    pub qtype: u16,
    /// QCLASS (`CLASS_IN`, or anything else, which gets no data).
    pub qclass: u16,
    /// Offset just past the question (QNAME, QTYPE, QCLASS).
    pub end: usize,
}

/// The first question of a standard query, or None for anything else.
pub fn parse_query(b: &[u8]) -> Option<Question> {
    if b.len() < 12 {
        return None;
    }
    let id = u16::from_be_bytes([b[0], b[1]]);
    let flags = u16::from_be_bytes([b[2], b[3]]);
    let qdcount = u16::from_be_bytes([b[4], b[5]]);
    if flags & 0x8000 != 0 || (flags >> 11) & 0xf != 0 || qdcount == 0 {
        return None;
    }
    let mut i = 12;
    let mut labels: Vec<String> = Vec::new();
    loop {
        let l = *b.get(i)? as usize;
        i += 1;
        if l == 0 {
            break;
        }
        if l > 63 {
            return None; // compression is not used in questions of queries we accept
        }
        let label = b.get(i..i + l)?;
        if label.contains(&b'.') {
            // "a.b" as one label would read as two: the name must have one spelling.
            return None;
        }
        labels.push(String::from_utf8(label.to_vec()).ok()?.to_ascii_lowercase());
        i += l;
        // 255 octets with the root's zero (as `questions` counts): the labels take <= 254.
        if i > 12 + 254 {
            return None;
        }
    }
    let qtype = u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?]);
    let qclass = u16::from_be_bytes([*b.get(i + 2)?, *b.get(i + 3)?]);
    Some(Question { id, name: labels.join("."), qtype, qclass, end: i + 4 })
}

/// Longest name on the wire (RFC 1035 §3.1): 255 octets, length octets and the root included.
pub const WIRE_NAME_MAX: usize = 255;
/// Compression pointers followed within one name at most. Pointers may form a loop; this ends
/// it (a real name needs far fewer: each pointer leads to at least one label of a 255-octet name).
const MAX_POINTERS: usize = 128;

/// One question of a DNS message as a server would read it, for the never-leak rule
/// (`route::tailnet_question`), which needs every question of whatever a program sends to
/// port 53 — not only the first question of a well-formed query, as [`parse_query`] reads.
#[derive(Debug, PartialEq, Eq)]
pub struct WireQuestion {
    /// The labels, ASCII lower-cased (DNS names are case-insensitive; resolvers randomize case
    /// as a defence), joined by `.`. A `.` byte inside a label is written `\` so that the text
    /// splits into labels exactly where the wire does (`a.b` as one label is not two labels);
    /// bytes that are not UTF-8 become U+FFFD. No trailing dot: the root is implied.
    pub name: String,
    /// QTYPE.
    pub qtype: u16,
}

/// Every question of a DNS message, in order, for any opcode and either direction (QR): the
/// QDCOUNT entries, reading compressed names (RFC 1035 §4.1.4, pointers in any direction, loops
/// cut after a bound), until the first one that cannot be read (cut short, a label type other
/// than a length or a pointer, a name longer than 255 octets). Never panics, on any bytes.
pub fn questions(msg: &[u8]) -> Questions<'_> {
    let count = match msg.get(4..6) {
        Some(c) if msg.len() >= 12 => u16::from_be_bytes([c[0], c[1]]),
        _ => 0,
    };
    Questions { msg, pos: 12, left: count }
}

/// The iterator of [`questions`].
#[derive(Debug)]
pub struct Questions<'a> {
    msg: &'a [u8],
    pos: usize,
    left: u16,
}

impl Questions<'_> {
    /// The offset just past the questions read so far: after the whole question section once
    /// the iterator has ended without a malformed question.
    pub fn end(&self) -> usize {
        self.pos
    }

    /// True when every question announced by QDCOUNT was read.
    pub fn complete(&self) -> bool {
        self.left == 0
    }
}

impl Iterator for Questions<'_> {
    type Item = WireQuestion;

    fn next(&mut self) -> Option<WireQuestion> {
        if self.left == 0 {
            return None;
        }
        let parsed = wire_name(self.msg, self.pos).and_then(|(name, end)| {
            let t = self.msg.get(end..end + 4)?;
            Some((WireQuestion { name, qtype: u16::from_be_bytes([t[0], t[1]]) }, end + 4))
        });
        match parsed {
            Some((q, next)) => {
                self.pos = next;
                self.left -= 1;
                Some(q)
            }
            None => {
                // Malformed: stop here for good (a server stops reading there too).
                self.msg = &[];
                None
            }
        }
    }
}

/// The name at `start` (see [`WireQuestion::name`]) and the offset just past it in the message
/// (past the first pointer, when it is compressed).
fn wire_name(msg: &[u8], start: usize) -> Option<(String, usize)> {
    let mut text: Vec<u8> = Vec::new();
    let (mut i, mut end, mut pointers, mut octets) = (start, None, 0usize, 0usize);
    loop {
        let l = *msg.get(i)?;
        match l & 0xc0 {
            0x00 => {
                let l = l as usize;
                octets += 1 + l;
                if octets > WIRE_NAME_MAX {
                    return None;
                }
                if l == 0 {
                    return Some((String::from_utf8_lossy(&text).into_owned(), end.unwrap_or(i + 1)));
                }
                let label = msg.get(i + 1..i + 1 + l)?;
                if !text.is_empty() {
                    text.push(b'.');
                }
                text.extend(label.iter().map(|&b| if b == b'.' { b'\\' } else { b.to_ascii_lowercase() }));
                i += 1 + l;
            }
            0xc0 => {
                let lo = *msg.get(i + 1)?;
                end.get_or_insert(i + 2);
                pointers += 1;
                if pointers > MAX_POINTERS {
                    return None;
                }
                i = ((l as usize & 0x3f) << 8) | lo as usize;
            }
            _ => return None, // 0x40, 0x80: extended label types (RFC 6891 §5), unused
        }
    }
}

/// The length of the one DNS message at the start of `b`: its header, every question QDCOUNT
/// announces and every record of ANCOUNT, NSCOUNT and ARCOUNT (names possibly compressed,
/// RDATA skipped by RDLENGTH). None when any of it cannot be read. A datagram that is one
/// whole message has `message_len(b) == Some(b.len())`; anything else (a header alone, a
/// question without its header, a second message or padding after the first) cannot be
/// judged as a question to a server, which reads it as one message.
pub fn message_len(b: &[u8]) -> Option<usize> {
    let h = b.get(..12)?;
    let count = |i: usize| u16::from_be_bytes([h[i], h[i + 1]]) as usize;
    let mut qs = questions(b);
    for _ in qs.by_ref() {}
    if !qs.complete() {
        return None;
    }
    let mut pos = qs.end();
    for _ in 0..count(6) + count(8) + count(10) {
        let (_, end) = wire_name(b, pos)?;
        let fixed = b.get(end..end + 10)?;
        let rdlen = u16::from_be_bytes([fixed[8], fixed[9]]) as usize;
        pos = end + 10 + rdlen;
        if pos > b.len() {
            return None;
        }
    }
    Some(pos)
}

/// A response to `msg` with this RCODE and no records: its header (ID, opcode and RD kept; QR
/// and RA set) and its question section copied as it is (compression pointers stay valid: the
/// offsets are unchanged), so a stub matches it to its query. For questions the responder
/// will neither answer nor forward. None when `msg` has no complete header.
pub fn error_response(msg: &[u8], rcode: u8) -> Option<Vec<u8>> {
    let h = msg.get(..12)?;
    let mut qs = questions(msg);
    let asked: Vec<WireQuestion> = qs.by_ref().collect();
    let header = |qdcount: u16| {
        let mut r = Vec::with_capacity(qs.end());
        r.extend_from_slice(&h[..2]);
        r.push(0x80 | (h[2] & 0x79)); // QR, opcode and RD as asked (AA, TC clear)
        r.push(0x80 | (rcode & 0x0f)); // RA, the RCODE
        r.extend_from_slice(&qdcount.to_be_bytes());
        r.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        r
    };
    if qs.complete() {
        let mut r = header(asked.len() as u16);
        r.extend_from_slice(msg.get(12..qs.end())?);
        // A pointer to a name past the question section (legal only in odd messages) would
        // dangle in the copy: then no questions, rather than other ones.
        if questions(&r).eq(asked) {
            return Some(r);
        }
    }
    Some(header(0))
}

/// A response to `query` (whose question ends at `q.end`) carrying `addr` as its one answer, or
/// no answer (NOERROR, no data) when `addr` is None or of the other family than asked.
pub fn answer(query: &[u8], q: &Question, addr: Option<IpAddr>) -> Vec<u8> {
    let rdata: Option<Vec<u8>> = match (q.qtype, addr) {
        (TYPE_A, Some(IpAddr::V4(a))) => Some(a.octets().to_vec()),
        (TYPE_AAAA, Some(IpAddr::V6(a))) => Some(a.octets().to_vec()),
        _ => None,
    };
    let mut r = Vec::with_capacity(q.end + 32);
    r.extend_from_slice(&q.id.to_be_bytes());
    let rd = u16::from_be_bytes([query[2], query[3]]) & 0x0100;
    r.extend_from_slice(&(0x8080 | rd).to_be_bytes()); // QR, RA, RD as asked, NOERROR
    r.extend_from_slice(&[0, 1]); // QDCOUNT
    r.extend_from_slice(&[0, rdata.is_some() as u8]); // ANCOUNT
    r.extend_from_slice(&[0, 0, 0, 0]); // NSCOUNT, ARCOUNT
    r.extend_from_slice(&query[12..q.end]);
    if let Some(d) = rdata {
        r.extend_from_slice(&[0xc0, 12]); // the name: a pointer to the question
        r.extend_from_slice(&q.qtype.to_be_bytes());
        r.extend_from_slice(&[0, 1]); // IN
        r.extend_from_slice(&60u32.to_be_bytes()); // TTL
        r.extend_from_slice(&(d.len() as u16).to_be_bytes());
        r.extend_from_slice(&d);
    }
    r
}

/// The answer for a tailnet name given a placeholder slot: its IPv4 placeholder for A, its
/// IPv6 placeholder for AAAA (class IN); for any other type or class NOERROR without data — the
/// name exists, with no record of that kind (what MagicDNS answers too).
pub fn answer_placeholder(query: &[u8], q: &Question, slot: Option<u32>) -> Vec<u8> {
    let addr = match (q.qclass, q.qtype, slot) {
        (CLASS_IN, TYPE_A, Some(s)) => Some(IpAddr::V4(crate::names::v4(s))),
        (CLASS_IN, TYPE_AAAA, Some(s)) => Some(IpAddr::V6(crate::names::v6(s))),
        _ => None,
    };
    answer(query, q, addr)
}

/// Does a question of this class and type get an address (and so need a placeholder)?
pub fn wants_address(qclass: u16, qtype: u16) -> bool {
    qclass == CLASS_IN && (qtype == TYPE_A || qtype == TYPE_AAAA)
}

/// A standard query for `name` (recursion desired), class IN.
pub fn query(id: u16, name: &str, qtype: u16) -> Option<Vec<u8>> {
    query_class(id, name, qtype, CLASS_IN)
}

/// A standard query for `name` (a host name, one trailing dot allowed, case kept as given) of
/// class `qclass` (recursion desired).
pub fn query_class(id: u16, name: &str, qtype: u16, qclass: u16) -> Option<Vec<u8>> {
    if !crate::names::is_host_name(name) {
        return None;
    }
    let mut q = Vec::with_capacity(18 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for l in name.trim_end_matches('.').split('.') {
        if l.is_empty() || l.len() > 63 {
            return None;
        }
        q.push(l.len() as u8);
        q.extend_from_slice(l.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&qclass.to_be_bytes());
    Some(q)
}

/// A standard query (recursion desired) for a name in *presentation* form, as the libresolv
/// query functions take it and glibc's `ns_name_pton` reads it: labels split at unescaped dots,
/// `\DDD` a decimal byte, `\X` the character X itself, one trailing dot allowed, `""` and `"."`
/// the root. So `pe\101r.tail1234.ts.net` is `peer.tail1234.ts.net` on the wire, and
/// `_http._tcp.peer` keeps its underscores. None for what `ns_name_pton` rejects (an empty label,
/// a label over 63 octets, a name over 255, a bad escape): glibc sends no query then.
pub fn query_presentation(id: u16, name: &[u8], qtype: u16, qclass: u16) -> Option<Vec<u8>> {
    let mut q = Vec::with_capacity(18 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    let mut label: Vec<u8> = Vec::new();
    let mut wire = 0usize; // octets of the name so far, length octets included
    let mut i = 0;
    while i < name.len() {
        let c = name[i];
        i += 1;
        match c {
            b'\\' => {
                let e = *name.get(i)?;
                if e.is_ascii_digit() {
                    let d = name.get(i..i + 3)?;
                    if !d.iter().all(u8::is_ascii_digit) {
                        return None;
                    }
                    let v = d.iter().fold(0u32, |a, &b| a * 10 + (b - b'0') as u32);
                    label.push(u8::try_from(v).ok()?);
                    i += 3;
                } else {
                    label.push(e);
                    i += 1;
                }
            }
            b'.' => {
                if label.is_empty() {
                    // The root: only as the whole name or after the last label.
                    if i != name.len() || wire != 0 {
                        return None;
                    }
                    break;
                }
                if label.len() > 63 {
                    return None;
                }
                q.push(label.len() as u8);
                q.extend_from_slice(&label);
                wire += 1 + label.len();
                label.clear();
            }
            _ => label.push(c),
        }
        if wire + label.len() > WIRE_NAME_MAX {
            return None;
        }
    }
    if !label.is_empty() {
        if label.len() > 63 {
            return None;
        }
        q.push(label.len() as u8);
        q.extend_from_slice(&label);
        wire += 1 + label.len();
    }
    if wire + 1 > WIRE_NAME_MAX {
        return None;
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&qclass.to_be_bytes());
    Some(q)
}

/// The first A/AAAA address of a response to query `id` (answers in the form `answer` writes:
/// a compressed name pointer, type, class, TTL, length, data).
pub fn first_address(r: &[u8], id: u16) -> Option<IpAddr> {
    if r.len() < 12 || u16::from_be_bytes([r[0], r[1]]) != id || r[2] & 0x80 == 0 || u16::from_be_bytes([r[6], r[7]]) == 0 {
        return None;
    }
    let q = parse_query(&[&r[..2], &[0x01, 0x00], &r[4..]].concat())?;
    let a = r.get(q.end..)?;
    if a.len() < 12 || a[0] & 0xc0 != 0xc0 {
        return None;
    }
    let ty = u16::from_be_bytes([a[2], a[3]]);
    let len = u16::from_be_bytes([a[10], a[11]]) as usize;
    let d = a.get(12..12 + len)?;
    match (ty, len) {
        (TYPE_A, 4) => Some(IpAddr::from(<[u8; 4]>::try_from(d).ok()?)),
        (TYPE_AAAA, 16) => Some(IpAddr::from(<[u8; 16]>::try_from(d).ok()?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn message_len_is_one_whole_message_or_none() {
        let q = super::query(7, "peer-1", super::TYPE_A).unwrap();
        assert_eq!(super::message_len(&q), Some(q.len()));
        // A header alone, the question without the header, a second message after the first.
        assert_eq!(super::message_len(&q[..12]), None);
        assert_eq!(super::message_len(&q[12..]), None);
        let two = [q.clone(), q.clone()].concat();
        assert_eq!(super::message_len(&two), Some(q.len()));
        // Padding after it (a segmented send).
        let mut padded = q.clone();
        padded.resize(64, 0);
        assert_ne!(super::message_len(&padded), Some(padded.len()));
        // A query with an EDNS OPT record (ARCOUNT 1): root name, type 41, RDLENGTH 0.
        let mut e = q.clone();
        e[11] = 1;
        e.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(super::message_len(&e), Some(e.len()));
        // An answer whose name is a compression pointer to the question's, with 4 octets.
        let mut a = q.clone();
        a[2] |= 0x80;
        a[7] = 1;
        a.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 240, 0, 0, 1]);
        assert_eq!(super::message_len(&a), Some(a.len()));
        // RDATA longer than what is there.
        assert_eq!(super::message_len(&a[..a.len() - 1]), None);
    }

    use super::*;

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for l in name.split('.') {
            q.push(l.len() as u8);
            q.extend_from_slice(l.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&[0, 1]);
        q
    }

    #[test]
    fn question_and_answers() {
        let q = query("Peer-1.tail1234.ts.net", TYPE_A);
        let p = parse_query(&q).unwrap();
        assert_eq!((p.id, p.name.as_str(), p.qtype, p.end), (0x1234, "peer-1.tail1234.ts.net", TYPE_A, q.len()));
        let r = answer(&q, &p, Some("240.0.1.2".parse().unwrap()));
        assert_eq!(&r[..4], &[0x12, 0x34, 0x81, 0x80]);
        assert_eq!(&r[6..8], &[0, 1]);
        assert_eq!(&r[r.len() - 4..], &[240, 0, 1, 2]);
        // AAAA asked, IPv4 given: no data.
        let q6 = query("peer", TYPE_AAAA);
        let p6 = parse_query(&q6).unwrap();
        let r = answer(&q6, &p6, Some("240.0.1.2".parse().unwrap()));
        assert_eq!(&r[6..8], &[0, 0]);
        assert_eq!(r.len(), q6.len());
        let r = answer(&q6, &p6, Some("100::5".parse().unwrap()));
        assert_eq!(&r[r.len() - 16..], &"100::5".parse::<std::net::Ipv6Addr>().unwrap().octets());
    }

    #[test]
    fn query_answer_roundtrip() {
        let q = super::query(7, "peer-1.tail1234.ts.net.", TYPE_A).unwrap();
        let p = parse_query(&q).unwrap();
        assert_eq!(p.name, "peer-1.tail1234.ts.net");
        let r = answer(&q, &p, Some("240.0.3.4".parse().unwrap()));
        assert_eq!(first_address(&r, 7), Some("240.0.3.4".parse().unwrap()));
        assert_eq!(first_address(&r, 8), None);
        assert_eq!(first_address(&answer(&q, &p, None), 7), None);
        assert_eq!(super::query(1, "a..b", TYPE_A), None);
        assert_eq!(super::query(1, "a\r\nb", TYPE_A), None);
    }

    /// A message with these questions, each (name bytes as wire labels, qtype).
    fn msg(qs: &[(&[&[u8]], u16)]) -> Vec<u8> {
        let mut m = vec![0xab, 0xcd, 0x01, 0x00, 0, qs.len() as u8, 0, 0, 0, 0, 0, 0];
        for (labels, t) in qs {
            for l in *labels {
                m.push(l.len() as u8);
                m.extend_from_slice(l);
            }
            m.push(0);
            m.extend_from_slice(&t.to_be_bytes());
            m.extend_from_slice(&[0, 1]);
        }
        m
    }

    fn names(m: &[u8]) -> Vec<(String, u16)> {
        questions(m).map(|q| (q.name, q.qtype)).collect()
    }

    #[test]
    fn every_question_is_read() {
        let m = msg(&[(&[b"Peer-1"], TYPE_A), (&[b"WWW", b"example", b"COM"], TYPE_AAAA)]);
        assert_eq!(names(&m), vec![("peer-1".into(), TYPE_A), ("www.example.com".into(), TYPE_AAAA)]);
        let mut qs = questions(&m);
        assert_eq!(qs.by_ref().count(), 2);
        assert!(qs.complete());
        assert_eq!(qs.end(), m.len());
        // Responses and other opcodes are read too (a question is a question).
        let mut r = m.clone();
        r[2] = 0x80 | (5 << 3);
        assert_eq!(names(&r).len(), 2);
        // The root, and a name given as a query built by `query`.
        assert_eq!(names(&msg(&[(&[], 2)])), vec![(String::new(), 2)]);
        let q = super::query(1, "peer.tail1234.ts.net.", TYPE_A).unwrap();
        assert_eq!(names(&q), vec![("peer.tail1234.ts.net".into(), TYPE_A)]);
    }

    #[test]
    fn compressed_names_are_followed_and_loops_cut() {
        // Second question: "peer-2" + pointer to "tail1234.ts.net" inside the first (offset 12 +
        // 1 + 6 = 19).
        let mut m = msg(&[(&[b"peer-1", b"tail1234", b"ts", b"net"], TYPE_A)]);
        m[5] = 2;
        m.extend_from_slice(&[6, b'p', b'e', b'e', b'r', b'-', b'2', 0xc0, 19, 0, 1, 0, 1]);
        // Third: a pointer to the whole first name.
        m[5] = 3;
        m.extend_from_slice(&[0xc0, 12, 0, 28, 0, 1]);
        assert_eq!(names(&m), vec![("peer-1.tail1234.ts.net".into(), 1), ("peer-2.tail1234.ts.net".into(), 1), ("peer-1.tail1234.ts.net".into(), 28)]);
        // A forward pointer (to a name placed after the question) is followed too.
        let mut f = vec![0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 18, 0, 1, 0, 1];
        f.extend_from_slice(&[4, b'p', b'e', b'e', b'r', 0]);
        assert_eq!(names(&f), vec![("peer".into(), 1)]);
        // A pointer to itself, and two pointing at each other: no name, no hang.
        let own = [0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1];
        assert_eq!(names(&own), vec![]);
        let pair = [0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'a', 0xc0, 16, 1, b'b', 0xc0, 12, 0, 1, 0, 1];
        assert_eq!(names(&pair), vec![]);
        // Out of the message.
        assert_eq!(names(&[0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 200, 0, 1, 0, 1]), vec![]);
    }

    #[test]
    fn malformed_questions_end_the_reading() {
        // A good question, then a cut one: the first is read, then nothing.
        let m = msg(&[(&[b"peer"], TYPE_A), (&[b"other"], TYPE_A)]);
        let mut qs = questions(&m[..m.len() - 3]);
        assert_eq!(qs.next().map(|q| q.name), Some("peer".into()));
        assert_eq!(qs.next(), None);
        assert!(!qs.complete());
        // Extended label types (0x40, 0x80).
        assert_eq!(names(&[0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x41, b'a', 0, 0, 1, 0, 1]), vec![]);
        assert_eq!(names(&[0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x81, b'a', 0, 0, 1, 0, 1]), vec![]);
        // Longer than 255 octets, also when built from pointers.
        let long: Vec<Vec<u8>> = (0..5).map(|_| vec![b'a'; 63]).collect();
        let refs: Vec<&[u8]> = long.iter().map(|v| v.as_slice()).collect();
        assert_eq!(names(&msg(&[(&refs, 1)])), vec![]);
        assert_eq!(names(&msg(&[(&refs[..3], 1)])).len(), 1);
        // No header, a QDCOUNT of 0, a header only.
        assert_eq!(names(&[0; 11]), vec![]);
        assert_eq!(names(&msg(&[])), vec![]);
        assert_eq!(names(&[0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0]), vec![]);
    }

    #[test]
    fn labels_keep_their_edges() {
        // "a.b" as one label is not two labels: its dot is written '\'.
        assert_eq!(names(&msg(&[(&[b"peer.ts", b"net"], 1)])), vec![("peer\\ts.net".into(), 1)]);
        // Other bytes are kept (lower-cased), non-UTF-8 replaced.
        assert_eq!(names(&msg(&[(&[b"A B", b"\xff"], 1)])), vec![("a b.\u{fffd}".into(), 1)]);
    }

    #[test]
    fn error_responses_echo_the_questions() {
        let mut m = msg(&[(&[b"peer"], TYPE_A), (&[b"x", b"ts", b"net"], TYPE_AAAA)]);
        m[2] = 0x01 | (2 << 3) | 0x04; // RD, opcode 2, AA (not echoed)
        m.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0]); // an additional record (not echoed)
        m[11] = 1;
        let r = error_response(&m, 2).unwrap();
        assert_eq!(&r[..4], &[0xab, 0xcd, 0x80 | (2 << 3) | 0x01, 0x82]);
        assert_eq!(&r[4..12], &[0, 2, 0, 0, 0, 0, 0, 0]);
        assert_eq!(names(&r), vec![("peer".into(), TYPE_A), ("x.ts.net".into(), TYPE_AAAA)]);
        assert_eq!(r.len(), m.len() - 11);
        // An unreadable question section: the header alone, QDCOUNT 0.
        let r = error_response(&m[..15], 5).unwrap();
        assert_eq!(r.len(), 12);
        assert_eq!(&r[4..6], &[0, 0]);
        assert_eq!(r[3] & 0x0f, 5);
        assert_eq!(error_response(&[0; 11], 2), None);
    }

    #[test]
    fn placeholder_answers_by_class_and_type() {
        let slot = crate::names::try_intern("dns-test-peer").unwrap();
        let q = super::query_class(9, "DNS-Test-Peer.", TYPE_A, CLASS_IN).unwrap();
        let p = parse_query(&q).unwrap();
        assert_eq!((p.name.as_str(), p.qclass, p.end), ("dns-test-peer", CLASS_IN, q.len()));
        let r = answer_placeholder(&q, &p, Some(slot));
        assert_eq!(first_address(&r, 9), Some(IpAddr::V4(crate::names::v4(slot))));
        // The question is echoed as asked (case kept).
        assert_eq!(&r[12..p.end], &q[12..p.end]);
        assert!(r.windows(13).any(|w| w == b"DNS-Test-Peer"));
        let q6 = super::query_class(9, "dns-test-peer", TYPE_AAAA, CLASS_IN).unwrap();
        let r6 = answer_placeholder(&q6, &parse_query(&q6).unwrap(), Some(slot));
        assert_eq!(first_address(&r6, 9), Some(IpAddr::V6(crate::names::v6(slot))));
        // Other types and classes: NOERROR, no data.
        for (ty, class) in [(15, CLASS_IN), (TYPE_A, 3), (TYPE_AAAA, 255), (255, CLASS_IN)] {
            let q = super::query_class(9, "dns-test-peer", ty, class).unwrap();
            let p = parse_query(&q).unwrap();
            assert_eq!((p.qtype, p.qclass), (ty, class));
            let r = answer_placeholder(&q, &p, Some(slot));
            assert_eq!((&r[2..4], &r[6..8]), (&[0x81, 0x80][..], &[0, 0][..]), "{ty}/{class}");
            assert_eq!(r.len(), q.len());
        }
        assert!(wants_address(CLASS_IN, TYPE_A) && wants_address(CLASS_IN, TYPE_AAAA));
        assert!(!wants_address(3, TYPE_A) && !wants_address(CLASS_IN, 15));
        // No slot (none needed): no data either.
        assert_eq!(&answer_placeholder(&q, &parse_query(&q).unwrap(), None)[6..8], &[0, 0]);
    }

    #[test]
    fn presentation_names_as_ns_name_pton_reads_them() {
        let wire = |s: &str| super::query_presentation(7, s.as_bytes(), TYPE_A, CLASS_IN).map(|q| q[12..q.len() - 4].to_vec());
        assert_eq!(wire("pe\\101r.ts.net"), wire("peer.ts.net"));
        assert_eq!(wire("peer\\-1."), wire("peer-1"));
        assert_eq!(wire("a\\.b").unwrap(), b"\x03a.b\x00", "an escaped dot is in the label");
        assert_eq!(wire("_http._tcp.x").unwrap(), b"\x05_http\x04_tcp\x01x\x00");
        assert_eq!(wire("").unwrap(), [0]);
        assert_eq!(wire(".").unwrap(), [0]);
        for bad in ["a..b", ".a", "a..", "a\\25", "a\\256", "a\\", &"x".repeat(64)] {
            assert_eq!(wire(bad), None, "{bad:?}");
        }
        let long = vec!["abc"; 63].join("."); // 63 * 4 + the root = 253 octets
        assert_eq!(wire(&format!("{long}.d")).map(|w| w.len()), Some(255));
        assert_eq!(wire(&format!("{long}.de")), None, "over 255 octets");
        let q = super::query_presentation(7, b"_http._tcp.peer.tail1234.ts.net", 33, CLASS_IN).unwrap();
        let p = parse_query(&q).unwrap();
        assert_eq!((p.name.as_str(), p.qtype, p.end), ("_http._tcp.peer.tail1234.ts.net", 33, q.len()));
    }

    #[test]
    fn rejects_non_queries() {
        let mut q = query("peer", TYPE_A);
        q[2] |= 0x80; // a response
        assert_eq!(parse_query(&q), None);
        assert_eq!(parse_query(&[0; 5]), None);
        let q = query("peer", TYPE_A);
        assert_eq!(parse_query(&q[..q.len() - 1]), None);
        let mut one_label = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 3, b'a', b'.', b'b', 0, 0, 1, 0, 1];
        assert_eq!(parse_query(&one_label), None, "a dot inside a label");
        one_label[14] = b'x';
        assert_eq!(parse_query(&one_label).map(|q| q.name), Some("axb".into()));
    }
}
