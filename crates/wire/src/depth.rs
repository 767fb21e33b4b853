//! Measures the nesting depth of field tables and arrays before amq-protocol parses them.
//!
//! amq-protocol's field-table parser recurses once per nesting level; a few kilobytes of
//! nested tables overflow a thread's stack and abort the process. This walker reads the
//! same encoding with recursion bounded by [`MAX_TABLE_DEPTH`], so hostile input is
//! refused with FRAME_ERROR before the recursive parser ever runs. It only locates tables;
//! validation of the values themselves is left to amq-protocol.

/// Deepest nesting of tables and arrays accepted in any frame. A table inside a table
/// counts as depth 2. RabbitMQ itself has no documented limit; 64 is far beyond what any
/// real client sends.
pub const MAX_TABLE_DEPTH: usize = 64;

/// Outcome of a depth scan that did not pass.
#[derive(Debug, PartialEq, Eq)]
pub enum DepthError {
    /// Nesting deeper than the limit.
    TooDeep,
    /// The bytes do not form a table (truncated, unknown type); the real parser will
    /// report it.
    Malformed,
}

fn take(buf: &[u8], pos: usize, n: usize) -> Result<usize, DepthError> {
    let end = pos.checked_add(n).ok_or(DepthError::Malformed)?;
    if end > buf.len() {
        return Err(DepthError::Malformed);
    }
    Ok(end)
}

fn read_u32(buf: &[u8], pos: usize) -> Result<(usize, usize), DepthError> {
    let end = take(buf, pos, 4)?;
    let len = u32::from_be_bytes([buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]]) as usize;
    Ok((end, len))
}

/// Walks one field table starting at `pos` (its 4-byte length prefix), at nesting `depth`.
/// Returns the position just after the table.
pub fn scan_table(buf: &[u8], pos: usize, depth: usize) -> Result<usize, DepthError> {
    if depth > MAX_TABLE_DEPTH {
        return Err(DepthError::TooDeep);
    }
    let (start, len) = read_u32(buf, pos)?;
    let end = take(buf, start, len)?;
    let inner = &buf[..end];
    let mut p = start;
    while p < end {
        let name_len = *inner.get(p).ok_or(DepthError::Malformed)? as usize;
        p = take(inner, p + 1, name_len)?;
        p = scan_value(inner, p, depth)?;
    }
    Ok(end)
}

fn scan_array(buf: &[u8], pos: usize, depth: usize) -> Result<usize, DepthError> {
    if depth > MAX_TABLE_DEPTH {
        return Err(DepthError::TooDeep);
    }
    let (start, len) = read_u32(buf, pos)?;
    let end = take(buf, start, len)?;
    let inner = &buf[..end];
    let mut p = start;
    while p < end {
        p = scan_value(inner, p, depth)?;
    }
    Ok(end)
}

fn scan_value(buf: &[u8], pos: usize, depth: usize) -> Result<usize, DepthError> {
    let kind = *buf.get(pos).ok_or(DepthError::Malformed)?;
    let p = pos + 1;
    match kind {
        b't' | b'b' | b'B' => take(buf, p, 1),
        b's' | b'u' | b'U' => take(buf, p, 2),
        b'I' | b'i' | b'f' => take(buf, p, 4),
        b'L' | b'l' | b'd' | b'T' => take(buf, p, 8),
        b'D' => take(buf, p, 5),
        b'V' => Ok(p),
        b'S' | b'x' => {
            let (start, len) = read_u32(buf, p)?;
            take(buf, start, len)
        }
        b'A' => scan_array(buf, p, depth + 1),
        b'F' => scan_table(buf, p, depth + 1),
        _ => Err(DepthError::Malformed),
    }
}

fn skip_shortstr(buf: &[u8], pos: usize) -> Result<usize, DepthError> {
    let len = *buf.get(pos).ok_or(DepthError::Malformed)? as usize;
    take(buf, pos + 1, len)
}

/// Offset of the field table argument in a method payload (which starts with the class and
/// method ids), for the methods that carry one.
fn method_table_offset(payload: &[u8]) -> Result<Option<usize>, DepthError> {
    if payload.len() < 4 {
        return Ok(None);
    }
    let class = u16::from_be_bytes([payload[0], payload[1]]);
    let method = u16::from_be_bytes([payload[2], payload[3]]);
    let p = 4;
    let off = match (class, method) {
        // connection.start: version-major, version-minor, server-properties
        (10, 10) => p + 2,
        // connection.start-ok: client-properties first
        (10, 11) => p,
        // exchange.declare: reserved short, exchange, type, bits, arguments
        (40, 10) => {
            let q = skip_shortstr(payload, p + 2)?;
            skip_shortstr(payload, q)? + 1
        }
        // exchange.bind / unbind: reserved, destination, source, routing-key, bits, arguments
        (40, 30) | (40, 40) => {
            let mut q = p + 2;
            for _ in 0..3 {
                q = skip_shortstr(payload, q)?;
            }
            q + 1
        }
        // queue.declare: reserved, queue, bits, arguments
        (50, 10) => skip_shortstr(payload, p + 2)? + 1,
        // queue.bind: reserved, queue, exchange, routing-key, bits, arguments
        (50, 20) => {
            let mut q = p + 2;
            for _ in 0..3 {
                q = skip_shortstr(payload, q)?;
            }
            q + 1
        }
        // queue.unbind: reserved, queue, exchange, routing-key, arguments (no bits)
        (50, 50) => {
            let mut q = p + 2;
            for _ in 0..3 {
                q = skip_shortstr(payload, q)?;
            }
            q
        }
        // basic.consume: reserved, queue, consumer-tag, bits, arguments
        (60, 20) => {
            let q = skip_shortstr(payload, p + 2)?;
            skip_shortstr(payload, q)? + 1
        }
        _ => return Ok(None),
    };
    Ok(Some(off))
}

/// Checks the nesting depth of the field table in a method payload, if it has one.
pub fn check_method(payload: &[u8]) -> Result<(), DepthError> {
    match method_table_offset(payload) {
        Ok(Some(off)) => scan_table(payload, off, 1).map(|_| ()),
        Ok(None) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Checks the nesting depth of the `headers` property in a content header payload.
pub fn check_content_header(payload: &[u8]) -> Result<(), DepthError> {
    // class(2) weight(2) body-size(8) flags(2)
    if payload.len() < 14 {
        return Err(DepthError::Malformed);
    }
    let flags = u16::from_be_bytes([payload[12], payload[13]]);
    let mut p = 14;
    // the continuation bit (0x0001) is ignored, as amq-protocol's parser ignores it: the
    // check must cover exactly what the parser will read (skipping it here let a 126 KB
    // header of 18,000 nested tables overflow a worker's stack)
    if flags & 0x2000 == 0 {
        return Ok(());
    }
    if flags & 0x8000 != 0 {
        p = skip_shortstr(payload, p)?;
    }
    if flags & 0x4000 != 0 {
        p = skip_shortstr(payload, p)?;
    }
    scan_table(payload, p, 1).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table nested `levels` deep: {"a": {"a": ... {}}}.
    pub fn nested_table(levels: usize) -> Vec<u8> {
        let mut inner: Vec<u8> = 0u32.to_be_bytes().to_vec();
        for _ in 1..levels {
            let mut entry = vec![1u8, b'a', b'F'];
            entry.extend_from_slice(&inner);
            let mut t = (entry.len() as u32).to_be_bytes().to_vec();
            t.extend_from_slice(&entry);
            inner = t;
        }
        inner
    }

    #[test]
    fn shallow_tables_pass() {
        let t = nested_table(MAX_TABLE_DEPTH);
        assert_eq!(scan_table(&t, 0, 1), Ok(t.len()));
    }

    #[test]
    fn deep_tables_are_refused() {
        let t = nested_table(MAX_TABLE_DEPTH + 1);
        assert_eq!(scan_table(&t, 0, 1), Err(DepthError::TooDeep));
        let t = nested_table(5000);
        assert_eq!(scan_table(&t, 0, 1), Err(DepthError::TooDeep));
    }

    #[test]
    fn truncated_is_malformed_not_panic() {
        let t = nested_table(10);
        for cut in 0..t.len() {
            assert!(scan_table(&t[..cut], 0, 1).is_err());
        }
    }
}
