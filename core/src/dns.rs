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
        if i > 12 + 255 {
            return None;
        }
    }
    let qtype = u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?]);
    let qclass = u16::from_be_bytes([*b.get(i + 2)?, *b.get(i + 3)?]);
    Some(Question { id, name: labels.join("."), qtype, qclass, end: i + 4 })
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
