//! Field offsets of kernel structures, read from the running kernel's BTF
//! (`/sys/kernel/btf/vmlinux`), for the one place the program follows kernel pointers: the
//! handshake tracepoint finds a socket's network namespace (`sock.__sk_common.skc_net.net` then
//! `net.net_cookie`). The program is compiled without CO-RE relocations, so the daemon looks
//! the offsets up here and hands them to it.
//!
//! Read by hand: aya-obj parses BTF but keeps its type accessors crate-private, and what is
//! needed (walk the type section, find a struct by name, read its members) is a short pass
//! over a documented format (the kernel's Documentation/bpf/btf.rst).
use std::borrow::Cow;

const MAGIC: u16 = 0xeb9f;
const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_ENUM64: u32 = 19;

/// One struct member: its name and byte offset.
struct Member<'a> {
    name: Cow<'a, str>,
    /// Offset in bits (the bitfield encoding when the struct's kind_flag is set: low 24 bits).
    bits: u32,
}

pub struct Btf {
    data: Vec<u8>,
    types: std::ops::Range<usize>,
    strings: std::ops::Range<usize>,
}

impl Btf {
    /// The running kernel's BTF.
    pub fn kernel() -> Result<Self, String> {
        let path = "/sys/kernel/btf/vmlinux";
        let data = std::fs::read(path).map_err(|e| format!("{path}: {e} (the kernel's BTF)"))?;
        Self::parse(data).map_err(|e| format!("{path}: {e}"))
    }

    pub fn parse(data: Vec<u8>) -> Result<Self, String> {
        let u16_at = |at: usize| data.get(at..at + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
        let u32_at = |at: usize| {
            data.get(at..at + 4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
        };
        if u16_at(0) != Some(MAGIC) {
            return Err("not BTF (or not little-endian)".into());
        }
        let field = |at| u32_at(at).map(|v| v as usize).ok_or("a BTF header cut short");
        let header = field(4)?;
        let (type_off, type_len, str_off, str_len) =
            (field(8)?, field(12)?, field(16)?, field(20)?);
        let types = header + type_off..header + type_off + type_len;
        let strings = header + str_off..header + str_off + str_len;
        if types.end > data.len() || strings.end > data.len() {
            return Err("BTF sections past the end of the file".into());
        }
        Ok(Self { data, types, strings })
    }

    fn u32_at(&self, at: usize) -> u32 {
        u32::from_le_bytes(self.data[at..at + 4].try_into().expect("in the type section"))
    }

    fn name(&self, offset: u32) -> Cow<'_, str> {
        let start = self.strings.start + offset as usize;
        let bytes = &self.data[start.min(self.strings.end)..self.strings.end];
        let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
        String::from_utf8_lossy(&bytes[..end])
    }

    /// Where each type starts, by id (type ids count from 1).
    fn offsets(&self) -> Vec<usize> {
        let mut offsets = Vec::new();
        let mut at = self.types.start;
        while at + 12 <= self.types.end {
            offsets.push(at);
            let info = self.u32_at(at + 4);
            let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
            at += 12
                + match kind {
                    KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                    KIND_ARRAY => 12,
                    KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
                    KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
                    _ => 0,
                };
        }
        offsets
    }

    /// The members of the struct called `name`, or that the typedef called `name` names
    /// (`possible_net_t` is a typedef of an anonymous struct).
    fn struct_members(&self, name: &str) -> Option<Vec<Member<'_>>> {
        let offsets = self.offsets();
        let kind_of = |at: usize| (self.u32_at(at + 4) >> 24) & 0x1f;
        let named = offsets.iter().copied().find(|&at| {
            matches!(kind_of(at), KIND_STRUCT | KIND_TYPEDEF) && self.name(self.u32_at(at)) == name
        })?;
        let at = match kind_of(named) {
            KIND_TYPEDEF => *offsets.get((self.u32_at(named + 8) as usize).checked_sub(1)?)?,
            _ => named,
        };
        let info = self.u32_at(at + 4);
        if (info >> 24) & 0x1f != KIND_STRUCT {
            return None;
        }
        let (vlen, bitfields) = ((info & 0xffff) as usize, info & (1 << 31) != 0);
        let members = (0..vlen)
            .map(|i| {
                let m = at + 12 + 12 * i;
                let offset = self.u32_at(m + 8);
                let bits = if bitfields { offset & 0x00ff_ffff } else { offset };
                Member { name: self.name(self.u32_at(m)), bits }
            })
            .collect();
        Some(members)
    }

    /// The byte offset of `member` in struct `name`.
    pub fn offset_of(&self, name: &str, member: &str) -> Result<u32, String> {
        let members = self
            .struct_members(name)
            .ok_or_else(|| format!("no struct {name} in the kernel's BTF"))?;
        let found = members
            .iter()
            .find(|m| m.name == member)
            .ok_or_else(|| format!("struct {name} has no member {member}"))?;
        if found.bits % 8 != 0 {
            return Err(format!("{name}.{member} is not byte aligned"));
        }
        Ok(found.bits / 8)
    }
}

/// Where the handshake program finds a socket's network namespace cookie: the offset of the
/// `struct net *` in a `struct sock`, and of `net_cookie` in a `struct net`.
pub fn netns_cookie_offsets(btf: &Btf) -> Result<(u32, u32), String> {
    let common = btf.offset_of("sock", "__sk_common")?;
    let net = btf.offset_of("sock_common", "skc_net")?;
    // possible_net_t holds the pointer as its first member.
    let pointer = btf.offset_of("possible_net_t", "net")?;
    let cookie = btf.offset_of("net", "net_cookie")?;
    Ok((common + net + pointer, cookie))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BTF blob with one struct `s { a at byte 0; b at byte 8 }` after an int type, and
    /// `typedef s t`.
    fn blob() -> Vec<u8> {
        let strings = b"\0int\0s\0a\0b\0t\0";
        let mut types = Vec::new();
        let word = |types: &mut Vec<u8>, v: u32| types.extend(v.to_le_bytes());
        // int: name "int", kind INT, size 8, encoding word
        word(&mut types, 1);
        word(&mut types, KIND_INT << 24);
        word(&mut types, 8);
        word(&mut types, 64);
        // struct s: two members
        word(&mut types, 5);
        word(&mut types, (KIND_STRUCT << 24) | 2);
        word(&mut types, 16);
        for (name, bits) in [(7u32, 0u32), (9, 64)] {
            word(&mut types, name);
            word(&mut types, 1);
            word(&mut types, bits);
        }
        // typedef t: names type 2 (the struct)
        word(&mut types, 11);
        word(&mut types, KIND_TYPEDEF << 24);
        word(&mut types, 2);
        let mut out = Vec::new();
        out.extend(MAGIC.to_le_bytes());
        out.extend([1u8, 0]);
        for v in [24u32, 0, types.len() as u32, types.len() as u32, strings.len() as u32] {
            out.extend(v.to_le_bytes());
        }
        out.extend(types);
        out.extend(strings);
        out
    }

    #[test]
    fn finds_struct_members_by_name() {
        let btf = Btf::parse(blob()).unwrap();
        assert_eq!(btf.offset_of("s", "b"), Ok(8));
        assert_eq!(btf.offset_of("s", "a"), Ok(0));
        assert!(btf.offset_of("s", "c").unwrap_err().contains("no member c"));
        assert_eq!(btf.offset_of("t", "b"), Ok(8), "through the typedef");
        assert!(btf.offset_of("u", "a").unwrap_err().contains("no struct u"));
        assert!(Btf::parse(vec![0; 8]).is_err());
    }

    #[test]
    fn the_running_kernel_has_a_net_cookie() {
        let Ok(btf) = Btf::kernel() else {
            // Every kernel edge supports has BTF; a machine without it fails the daemon's
            // learning at start, with this reason.
            panic!("no /sys/kernel/btf/vmlinux");
        };
        let (net, cookie) = netns_cookie_offsets(&btf).unwrap();
        assert!(net > 0 && net < 4096 && cookie < 8192, "{net} {cookie}");
    }
}
