//! A small GVariant codec: the serialisation OSTree's metadata objects, file
//! headers and summaries are written in.
//!
//! Written here rather than taken from a crate because OSTree needs exactly two
//! things a general crate does not give together: a handful of types read and
//! written at run time from their type strings (`a{sv}` metadata holds any
//! type), and a *strict* reader. GLib tolerates non-normal data by reading
//! defaults; a mirror must instead refuse it, since a checksum names exact bytes
//! and two encodings of one value would be two objects. Strictness comes for
//! free from one rule: the normal form of a value is unique and this encoder
//! writes it, so bytes are normal form exactly when decoding then encoding them
//! gives them back (`decode_normal`).
//!
//! Integers are written little-endian as GVariant says; OSTree stores some
//! values byte-swapped (big-endian), which its object accessors undo.

use std::fmt;

/// A malformed or non-normal serialisation, or a bad type string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GvError {
    #[error("bad GVariant type string {0:?}")]
    BadType(String),
    #[error("GVariant of type {ty}: {why}")]
    Malformed { ty: String, why: &'static str },
    #[error("GVariant of type {0} is not in normal form")]
    NotNormal(String),
    #[error("expected a GVariant of type {expected}, found {found}")]
    WrongType { expected: String, found: String },
}

/// A GVariant type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Type {
    Bool,
    Byte,
    I16,
    U16,
    I32,
    U32,
    I64,
    U64,
    Handle,
    Double,
    Str,
    ObjectPath,
    Signature,
    Variant,
    Maybe(Box<Type>),
    Array(Box<Type>),
    Tuple(Vec<Type>),
    DictEntry(Box<Type>, Box<Type>),
}

impl Type {
    /// Parses one complete type string.
    pub fn parse(s: &str) -> Result<Type, GvError> {
        let bytes = s.as_bytes();
        let (ty, used) = Self::parse_prefix(bytes, 0).ok_or_else(|| GvError::BadType(s.into()))?;
        if used != bytes.len() {
            return Err(GvError::BadType(s.into()));
        }
        Ok(ty)
    }

    fn parse_prefix(b: &[u8], depth: usize) -> Option<(Type, usize)> {
        // GLib's own nesting limit; keeps hostile type strings from recursing deeply.
        if depth > 64 {
            return None;
        }
        let ty = match *b.first()? {
            b'b' => Type::Bool,
            b'y' => Type::Byte,
            b'n' => Type::I16,
            b'q' => Type::U16,
            b'i' => Type::I32,
            b'u' => Type::U32,
            b'x' => Type::I64,
            b't' => Type::U64,
            b'h' => Type::Handle,
            b'd' => Type::Double,
            b's' => Type::Str,
            b'o' => Type::ObjectPath,
            b'g' => Type::Signature,
            b'v' => Type::Variant,
            b'm' => {
                let (t, n) = Self::parse_prefix(&b[1..], depth + 1)?;
                return Some((Type::Maybe(Box::new(t)), n + 1));
            }
            b'a' => {
                let (t, n) = Self::parse_prefix(&b[1..], depth + 1)?;
                return Some((Type::Array(Box::new(t)), n + 1));
            }
            b'(' => {
                let mut at = 1;
                let mut members = Vec::new();
                while *b.get(at)? != b')' {
                    let (t, n) = Self::parse_prefix(&b[at..], depth + 1)?;
                    members.push(t);
                    at += n;
                }
                return Some((Type::Tuple(members), at + 1));
            }
            b'{' => {
                let (k, n) = Self::parse_prefix(&b[1..], depth + 1)?;
                if !k.is_basic() {
                    return None;
                }
                let (v, m) = Self::parse_prefix(&b[1 + n..], depth + 1)?;
                if *b.get(1 + n + m)? != b'}' {
                    return None;
                }
                return Some((Type::DictEntry(Box::new(k), Box::new(v)), n + m + 2));
            }
            _ => return None,
        };
        Some((ty, 1))
    }

    fn is_basic(&self) -> bool {
        !matches!(
            self,
            Type::Variant | Type::Maybe(_) | Type::Array(_) | Type::Tuple(_) | Type::DictEntry(..)
        )
    }

    /// The size of every value of this type, when it is fixed.
    pub fn fixed_size(&self) -> Option<usize> {
        match self {
            Type::Bool | Type::Byte => Some(1),
            Type::I16 | Type::U16 => Some(2),
            Type::I32 | Type::U32 | Type::Handle => Some(4),
            Type::I64 | Type::U64 | Type::Double => Some(8),
            Type::Str | Type::ObjectPath | Type::Signature | Type::Variant => None,
            Type::Maybe(_) | Type::Array(_) => None,
            Type::Tuple(members) => {
                let mut size = 0;
                for m in members {
                    size = align(size, m.alignment()) + m.fixed_size()?;
                }
                if members.is_empty() {
                    Some(1)
                } else {
                    Some(align(size, self.alignment()))
                }
            }
            Type::DictEntry(k, v) => {
                let size = align(k.fixed_size()?, v.alignment()) + v.fixed_size()?;
                Some(align(size, self.alignment()))
            }
        }
    }

    /// The alignment of this type's values.
    pub fn alignment(&self) -> usize {
        match self {
            Type::Bool | Type::Byte | Type::Str | Type::ObjectPath | Type::Signature => 1,
            Type::I16 | Type::U16 => 2,
            Type::I32 | Type::U32 | Type::Handle => 4,
            Type::I64 | Type::U64 | Type::Double | Type::Variant => 8,
            Type::Maybe(t) | Type::Array(t) => t.alignment(),
            Type::Tuple(members) => members.iter().map(Type::alignment).max().unwrap_or(1),
            Type::DictEntry(k, v) => k.alignment().max(v.alignment()),
        }
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = match self {
            Type::Bool => "b",
            Type::Byte => "y",
            Type::I16 => "n",
            Type::U16 => "q",
            Type::I32 => "i",
            Type::U32 => "u",
            Type::I64 => "x",
            Type::U64 => "t",
            Type::Handle => "h",
            Type::Double => "d",
            Type::Str => "s",
            Type::ObjectPath => "o",
            Type::Signature => "g",
            Type::Variant => "v",
            Type::Maybe(t) => return write!(f, "m{t}"),
            Type::Array(t) => return write!(f, "a{t}"),
            Type::Tuple(members) => {
                f.write_str("(")?;
                for m in members {
                    write!(f, "{m}")?;
                }
                return f.write_str(")");
            }
            Type::DictEntry(k, v) => return write!(f, "{{{k}{v}}}"),
        };
        f.write_str(c)
    }
}

/// A GVariant value. Byte arrays (`ay`) are always `Bytes`, never an `Array` of `Byte`s.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Bool(bool),
    Byte(u8),
    I16(i16),
    U16(u16),
    I32(i32),
    U32(u32),
    I64(i64),
    U64(u64),
    Handle(i32),
    /// The IEEE 754 bits, so values compare and round-trip exactly.
    Double(u64),
    Str(String),
    ObjectPath(String),
    Signature(String),
    Variant(Box<Value>),
    Maybe(Type, Option<Box<Value>>),
    Bytes(Vec<u8>),
    /// The element type (kept for empty arrays) and the elements.
    Array(Type, Vec<Value>),
    Tuple(Vec<Value>),
    DictEntry(Box<Value>, Box<Value>),
}

impl Value {
    /// This value's type.
    pub fn type_of(&self) -> Type {
        match self {
            Value::Bool(_) => Type::Bool,
            Value::Byte(_) => Type::Byte,
            Value::I16(_) => Type::I16,
            Value::U16(_) => Type::U16,
            Value::I32(_) => Type::I32,
            Value::U32(_) => Type::U32,
            Value::I64(_) => Type::I64,
            Value::U64(_) => Type::U64,
            Value::Handle(_) => Type::Handle,
            Value::Double(_) => Type::Double,
            Value::Str(_) => Type::Str,
            Value::ObjectPath(_) => Type::ObjectPath,
            Value::Signature(_) => Type::Signature,
            Value::Variant(_) => Type::Variant,
            Value::Maybe(t, _) => Type::Maybe(Box::new(t.clone())),
            Value::Bytes(_) => Type::Array(Box::new(Type::Byte)),
            Value::Array(t, _) => Type::Array(Box::new(t.clone())),
            Value::Tuple(members) => Type::Tuple(members.iter().map(Value::type_of).collect()),
            Value::DictEntry(k, v) => DictEntryType(k.type_of(), v.type_of()).into(),
        }
    }

    /// The normal-form serialisation.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Value::Bool(b) => out.push(u8::from(*b)),
            Value::Byte(b) => out.push(*b),
            Value::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::I32(v) | Value::Handle(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::U64(v) | Value::Double(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::Str(s) | Value::ObjectPath(s) | Value::Signature(s) => {
                out.extend_from_slice(s.as_bytes());
                out.push(0);
            }
            Value::Variant(v) => {
                v.encode_into(out);
                out.push(0);
                out.extend_from_slice(v.type_of().to_string().as_bytes());
            }
            Value::Maybe(t, v) => {
                if let Some(v) = v {
                    v.encode_into(out);
                    if t.fixed_size().is_none() {
                        out.push(0);
                    }
                }
            }
            Value::Bytes(b) => out.extend_from_slice(b),
            Value::Array(t, items) => {
                let a = t.alignment();
                if t.fixed_size().is_some() {
                    for item in items {
                        item.encode_into(out);
                    }
                } else {
                    let mut ends = Vec::with_capacity(items.len());
                    for item in items {
                        pad(out, a);
                        let mut child = Vec::new();
                        item.encode_into(&mut child);
                        out.extend_from_slice(&child);
                        ends.push(out.len());
                    }
                    write_offsets(out, &ends);
                }
            }
            // Structures are framed relative to their own start.
            Value::Tuple(members) => {
                let mut own = Vec::new();
                encode_struct(members.iter(), &self.type_of(), &mut own);
                out.extend_from_slice(&own);
            }
            Value::DictEntry(k, v) => {
                let mut own = Vec::new();
                encode_struct([&**k, &**v].into_iter(), &self.type_of(), &mut own);
                out.extend_from_slice(&own);
            }
        }
    }
}

struct DictEntryType(Type, Type);

impl From<DictEntryType> for Type {
    fn from(d: DictEntryType) -> Type {
        Type::DictEntry(Box::new(d.0), Box::new(d.1))
    }
}

fn align(n: usize, a: usize) -> usize {
    n.div_ceil(a) * a
}

fn pad(out: &mut Vec<u8>, a: usize) {
    out.resize(align(out.len(), a), 0);
}

/// The width of each framing offset in a container of `size` bytes, as GLib reads it.
fn offset_width(size: usize) -> usize {
    match size {
        0 => 0,
        1..=0xff => 1,
        0x100..=0xffff => 2,
        0x1_0000..=0xffff_ffff => 4,
        _ => 8,
    }
}

/// The smallest width for which the container with its offsets still reads back with it.
fn width_for(body: usize, count: usize) -> usize {
    if count == 0 {
        return 0;
    }
    for w in [1usize, 2, 4] {
        if offset_width(body + count * w) <= w {
            return w;
        }
    }
    8
}

fn write_offsets(out: &mut Vec<u8>, ends: &[usize]) {
    let w = width_for(out.len(), ends.len());
    for &end in ends {
        out.extend_from_slice(&(end as u64).to_le_bytes()[..w]);
    }
}

fn encode_struct<'a>(members: impl Iterator<Item = &'a Value>, ty: &Type, out: &mut Vec<u8>) {
    let members: Vec<&Value> = members.collect();
    if members.is_empty() {
        out.push(0);
        return;
    }
    let mut ends = Vec::new();
    for (i, m) in members.iter().enumerate() {
        let t = m.type_of();
        pad(out, t.alignment());
        let mut child = Vec::new();
        m.encode_into(&mut child);
        out.extend_from_slice(&child);
        if t.fixed_size().is_none() && i + 1 != members.len() {
            ends.push(out.len());
        }
    }
    if ty.fixed_size().is_some() {
        pad(out, ty.alignment());
    } else {
        ends.reverse();
        write_offsets(out, &ends);
    }
}

fn malformed(ty: &Type, why: &'static str) -> GvError {
    GvError::Malformed {
        ty: ty.to_string(),
        why,
    }
}

fn read_offset(bytes: &[u8], at: usize, width: usize) -> usize {
    let mut buf = [0u8; 8];
    buf[..width].copy_from_slice(&bytes[at..at + width]);
    usize::try_from(u64::from_le_bytes(buf)).unwrap_or(usize::MAX)
}

/// Decodes `bytes` as a value of `ty`, refusing anything out of bounds; does
/// not by itself insist on normal form (see `decode_normal`).
pub fn decode(ty: &Type, bytes: &[u8]) -> Result<Value, GvError> {
    decode_at(ty, bytes, 0)
}

/// Decodes `bytes` and insists that they are the normal form of what they hold.
pub fn decode_normal(ty: &Type, bytes: &[u8]) -> Result<Value, GvError> {
    let value = decode(ty, bytes)?;
    if value.encode() != bytes {
        return Err(GvError::NotNormal(ty.to_string()));
    }
    Ok(value)
}

fn fixed<const N: usize>(ty: &Type, bytes: &[u8]) -> Result<[u8; N], GvError> {
    bytes
        .try_into()
        .map_err(|_| malformed(ty, "wrong size for a fixed-size value"))
}

fn string(ty: &Type, bytes: &[u8]) -> Result<String, GvError> {
    let Some((&0, body)) = bytes.split_last() else {
        return Err(malformed(ty, "a string must end with NUL"));
    };
    if body.contains(&0) {
        return Err(malformed(ty, "a string holds a NUL"));
    }
    String::from_utf8(body.to_vec()).map_err(|_| malformed(ty, "a string is not UTF-8"))
}

fn decode_at(ty: &Type, bytes: &[u8], depth: usize) -> Result<Value, GvError> {
    if depth > 64 {
        return Err(malformed(ty, "nested too deeply"));
    }
    Ok(match ty {
        Type::Bool => match fixed::<1>(ty, bytes)?[0] {
            0 => Value::Bool(false),
            1 => Value::Bool(true),
            _ => return Err(malformed(ty, "a boolean is neither 0 nor 1")),
        },
        Type::Byte => Value::Byte(fixed::<1>(ty, bytes)?[0]),
        Type::I16 => Value::I16(i16::from_le_bytes(fixed(ty, bytes)?)),
        Type::U16 => Value::U16(u16::from_le_bytes(fixed(ty, bytes)?)),
        Type::I32 => Value::I32(i32::from_le_bytes(fixed(ty, bytes)?)),
        Type::Handle => Value::Handle(i32::from_le_bytes(fixed(ty, bytes)?)),
        Type::U32 => Value::U32(u32::from_le_bytes(fixed(ty, bytes)?)),
        Type::I64 => Value::I64(i64::from_le_bytes(fixed(ty, bytes)?)),
        Type::U64 => Value::U64(u64::from_le_bytes(fixed(ty, bytes)?)),
        Type::Double => Value::Double(u64::from_le_bytes(fixed(ty, bytes)?)),
        Type::Str => Value::Str(string(ty, bytes)?),
        Type::ObjectPath => Value::ObjectPath(string(ty, bytes)?),
        Type::Signature => Value::Signature(string(ty, bytes)?),
        Type::Variant => {
            let sep = bytes
                .iter()
                .rposition(|&b| b == 0)
                .ok_or_else(|| malformed(ty, "a variant has no type string"))?;
            let type_str = std::str::from_utf8(&bytes[sep + 1..])
                .map_err(|_| malformed(ty, "a variant's type string is not ASCII"))?;
            let inner = Type::parse(type_str)?;
            Value::Variant(Box::new(decode_at(&inner, &bytes[..sep], depth + 1)?))
        }
        Type::Maybe(t) => {
            if bytes.is_empty() {
                Value::Maybe((**t).clone(), None)
            } else if t.fixed_size().is_some() {
                Value::Maybe(
                    (**t).clone(),
                    Some(Box::new(decode_at(t, bytes, depth + 1)?)),
                )
            } else {
                let Some((&0, body)) = bytes.split_last() else {
                    return Err(malformed(ty, "a maybe must end with NUL"));
                };
                Value::Maybe(
                    (**t).clone(),
                    Some(Box::new(decode_at(t, body, depth + 1)?)),
                )
            }
        }
        Type::Array(t) if **t == Type::Byte => Value::Bytes(bytes.to_vec()),
        Type::Array(t) => {
            let mut items = Vec::new();
            if let Some(size) = t.fixed_size() {
                if !bytes.len().is_multiple_of(size) {
                    return Err(malformed(
                        ty,
                        "length is not a multiple of the element size",
                    ));
                }
                for chunk in bytes.chunks(size) {
                    items.push(decode_at(t, chunk, depth + 1)?);
                }
            } else if !bytes.is_empty() {
                let w = offset_width(bytes.len());
                let table = read_offset(bytes, bytes.len() - w, w);
                if table > bytes.len() || !(bytes.len() - table).is_multiple_of(w) {
                    return Err(malformed(ty, "bad framing offsets"));
                }
                let n = (bytes.len() - table) / w;
                let mut start = 0;
                for i in 0..n {
                    let end = read_offset(bytes, table + i * w, w);
                    let begin = align(start, t.alignment());
                    if begin > end || end > table {
                        return Err(malformed(ty, "bad framing offsets"));
                    }
                    items.push(decode_at(t, &bytes[begin..end], depth + 1)?);
                    start = end;
                }
            }
            Value::Array((**t).clone(), items)
        }
        Type::Tuple(members) => Value::Tuple(decode_struct(ty, members, bytes, depth)?),
        Type::DictEntry(k, v) => {
            let mut kv = decode_struct(ty, &[(**k).clone(), (**v).clone()], bytes, depth)?;
            let v = kv.pop().expect("two members");
            let k = kv.pop().expect("two members");
            Value::DictEntry(Box::new(k), Box::new(v))
        }
    })
}

fn decode_struct(
    ty: &Type,
    members: &[Type],
    bytes: &[u8],
    depth: usize,
) -> Result<Vec<Value>, GvError> {
    if let Some(size) = ty.fixed_size() {
        if bytes.len() != size {
            return Err(malformed(ty, "wrong size for a fixed-size value"));
        }
    }
    if members.is_empty() {
        return Ok(Vec::new());
    }
    let w = offset_width(bytes.len());
    let mut table_end = bytes.len();
    let mut pos = 0;
    let mut out = Vec::with_capacity(members.len());
    for (i, m) in members.iter().enumerate() {
        let begin = align(pos, m.alignment());
        let end = if let Some(size) = m.fixed_size() {
            begin + size
        } else if i + 1 == members.len() {
            table_end
        } else {
            if table_end < w || w == 0 {
                return Err(malformed(ty, "bad framing offsets"));
            }
            table_end -= w;
            read_offset(bytes, table_end, w)
        };
        if begin > end || end > table_end {
            return Err(malformed(ty, "member out of bounds"));
        }
        out.push(decode_at(m, &bytes[begin..end], depth + 1)?);
        pos = end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Type {
        Type::parse(s).unwrap()
    }

    #[test]
    fn type_strings_round_trip_and_bad_ones_are_refused() {
        for s in [
            "(a{sv}aya(say)sstayay)",
            "(a(say)a(sayay))",
            "(uuua(ayay))",
            "(tuuuusa(ayay))",
            "mas",
            "()",
        ] {
            assert_eq!(t(s).to_string(), s);
        }
        for s in ["", "a", "(u", "{vs}", "uu", "z", "{sss}"] {
            assert!(Type::parse(s).is_err(), "{s}");
        }
    }

    #[test]
    fn known_encodings_from_the_gvariant_paper() {
        // Examples from the GVariant specification.
        let v = Value::Tuple(vec![Value::Str("foo".into()), Value::I32(-1)]);
        assert_eq!(v.encode(), b"foo\0\xff\xff\xff\xff\x04");
        let v = Value::Array(
            Type::Str,
            vec![Value::Str("hi".into()), Value::Str("bye".into())],
        );
        assert_eq!(v.encode(), b"hi\0bye\0\x03\x07");
        let v = Value::Variant(Box::new(Value::Tuple(vec![
            Value::U32(3),
            Value::Str("x".into()),
        ])));
        // "(us)" in a variant: u32 3, "x\0", then the type string.
        assert_eq!(v.encode(), b"\x03\0\0\0x\0\0(us)");
        let value = Value::Tuple(vec![Value::Str("foo".into()), Value::U32(7)]);
        assert_eq!(decode_normal(&t("(su)"), &value.encode()).unwrap(), value);
    }

    #[test]
    fn non_normal_forms_are_refused() {
        let ty = t("as");
        let good = Value::Array(Type::Str, vec![Value::Str("hi".into())]).encode();
        assert!(decode_normal(&ty, &good).is_ok());
        // Wider offsets than needed: GLib would read it, normal form forbids it.
        let mut wide = b"hi\0".to_vec();
        wide.extend_from_slice(&[3, 0]);
        assert!(decode(&ty, &wide).is_err() || decode_normal(&ty, &wide).is_err());
        // Non-zero padding between members.
        let ty = t("(yt)");
        let mut bytes = Value::Tuple(vec![Value::Byte(1), Value::U64(2)]).encode();
        assert!(decode_normal(&ty, &bytes).is_ok());
        bytes[3] = 9;
        assert_eq!(
            decode_normal(&ty, &bytes),
            Err(GvError::NotNormal("(yt)".into()))
        );
        // A boolean that is 2, a string without its NUL, trailing bytes.
        assert!(decode_normal(&t("b"), &[2]).is_err());
        assert!(decode_normal(&t("s"), b"abc").is_err());
        assert!(decode_normal(&t("(u)"), &[1, 0, 0, 0, 0]).is_err());
        // Offsets pointing outside the container never panic.
        for junk in [&[0xffu8][..], &[0, 0xff], &[1, 2, 3, 0xfe], b"\0\0\0"] {
            let _ = decode(&t("a(say)"), junk);
            let _ = decode(&t("(a{sv}aya(say)sstayay)"), junk);
        }
    }
}
