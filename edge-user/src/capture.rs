//! Reading Ethernet frames from a capture file: classic pcap (read here) and pcapng (read with
//! `pcap-file`).
//!
//! Classic pcap is read by hand because `pcap-file` refuses any capture taken with a snap
//! length (`tcpdump -s 96`): it takes a frame longer on the wire than the snap length for an
//! error, when that is what a snap length is for. The format is a 24-byte header and a
//! 16-byte header per frame (libpcap's `pcap-savefile(5)`); reading it is a few lines and
//! keeps every frame that was captured, cut or not.
use std::path::Path;

use pcap_file::{
    pcapng::{Block, PcapNgReader},
    DataLink, PcapError,
};

use crate::error::{Error, Result};

/// One captured frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The bytes captured.
    pub data: Vec<u8>,
    /// Its length on the wire; more than `data.len()` when the snap length cut it.
    pub original_len: usize,
}

/// The frames of a capture, and why it ends early if it does (a file cut off inside a frame:
/// the frames before that point are all here).
#[derive(Debug, Default)]
pub struct Capture {
    pub frames: Vec<Frame>,
    pub truncated_end: Option<String>,
}

/// Largest frame a capture may claim to hold (libpcap's own limit for a snap length).
const MAX_FRAME: usize = 262_144;
const LINKTYPE_ETHERNET: u32 = 1;

/// Reads every Ethernet frame of a pcap or pcapng file.
pub fn read(path: &Path) -> Result<Capture> {
    let bytes = std::fs::read(path)
        .map_err(|e| Error::Pcap(format!("{}: cannot read: {e}", path.display())))?;
    parse(&bytes, &path.display().to_string())
}

/// Every Ethernet frame of a capture's bytes (named `name` in errors).
pub fn parse(bytes: &[u8], name: &str) -> Result<Capture> {
    let fail = |what: String| Error::Pcap(format!("{name}: {what}"));
    let magic = bytes.get(..4).ok_or_else(|| fail("too short to be a capture".into()))?;
    match magic {
        [0x0a, 0x0d, 0x0d, 0x0a] => pcapng(bytes).map_err(fail),
        _ => match pcap_byte_order(magic) {
            Some(little) => pcap(bytes, little).map_err(fail),
            None => Err(fail(format!(
                "not a pcap or pcapng file (it starts with {:02x} {:02x} {:02x} {:02x})",
                magic[0], magic[1], magic[2], magic[3]
            ))),
        },
    }
}

/// Whether a classic pcap file is little-endian, from its magic (microsecond or nanosecond).
fn pcap_byte_order(magic: &[u8]) -> Option<bool> {
    let le = u32::from_le_bytes(magic.try_into().ok()?);
    match le {
        0xa1b2_c3d4 | 0xa1b2_3c4d => Some(true),
        _ => match le.swap_bytes() {
            0xa1b2_c3d4 | 0xa1b2_3c4d => Some(false),
            _ => None,
        },
    }
}

fn pcap(bytes: &[u8], little: bool) -> std::result::Result<Capture, String> {
    let u32_at = |at: usize| -> Option<u32> {
        let b: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
        Some(if little { u32::from_le_bytes(b) } else { u32::from_be_bytes(b) })
    };
    // The link type's low 16 bits; the bits above carry FCS information.
    let link = u32_at(20).ok_or("the pcap file header is cut short (24 bytes)")? & 0xffff;
    if link != LINKTYPE_ETHERNET {
        return Err(format!("link type {link} is not Ethernet (1)"));
    }
    let mut capture = Capture::default();
    let mut at = 24;
    while at < bytes.len() {
        let index = capture.frames.len();
        let (Some(captured), Some(original)) = (u32_at(at + 8), u32_at(at + 12)) else {
            capture.truncated_end =
                Some(format!("the capture ends inside the header of frame {index} (byte {at})"));
            break;
        };
        let (captured, original) = (captured as usize, original as usize);
        if captured > MAX_FRAME {
            return Err(format!(
                "frame {index} (byte {at}) claims {captured} captured bytes, more than a capture \
                 holds ({MAX_FRAME}): the file is damaged"
            ));
        }
        let start = at + 16;
        let Some(data) = bytes.get(start..start + captured) else {
            capture.truncated_end = Some(format!(
                "the capture ends inside frame {index} (byte {at}): {} of its {captured} bytes",
                bytes.len() - start
            ));
            break;
        };
        capture.frames.push(Frame { data: data.to_vec(), original_len: original.max(captured) });
        at = start + captured;
    }
    Ok(capture)
}

fn pcapng(bytes: &[u8]) -> std::result::Result<Capture, String> {
    let mut reader = PcapNgReader::new(bytes).map_err(|e| e.to_string())?;
    let mut capture = Capture::default();
    while let Some(block) = reader.next_block() {
        let index = capture.frames.len();
        let block = match block {
            Ok(block) => block,
            Err(PcapError::IncompleteBuffer) => {
                capture.truncated_end =
                    Some(format!("the capture ends inside the block after frame {index}"));
                break;
            }
            Err(e) => return Err(format!("frame {index}: {e}")),
        };
        let (data, original_len, interface) = match block {
            Block::EnhancedPacket(p) => {
                (p.data.into_owned(), p.original_len as usize, p.interface_id)
            }
            Block::SimplePacket(p) => {
                let data = p.data.into_owned();
                let original = (p.original_len as usize).max(data.len());
                (data, original, 0)
            }
            _ => continue,
        };
        let link = reader.interfaces().get(interface as usize).map(|i| i.linktype);
        if link != Some(DataLink::ETHERNET) {
            return Err(format!("frame {index}: link type {link:?} is not Ethernet"));
        }
        let original_len = original_len.max(data.len());
        capture.frames.push(Frame { data, original_len });
    }
    Ok(capture)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A classic little-endian pcap with a snap length of `snap` holding `frames` (original
    /// lengths), each cut to the snap length.
    fn pcap_file(snap: u32, frames: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(0xa1b2_c3d4u32.to_le_bytes());
        out.extend(2u16.to_le_bytes());
        out.extend(4u16.to_le_bytes());
        out.extend([0u8; 8]);
        out.extend(snap.to_le_bytes());
        out.extend(1u32.to_le_bytes());
        for (i, len) in frames.iter().enumerate() {
            let captured = (*len).min(snap as usize);
            out.extend([i as u8, 0, 0, 0, 0, 0, 0, 0]);
            out.extend((captured as u32).to_le_bytes());
            out.extend((*len as u32).to_le_bytes());
            out.extend(vec![i as u8; captured]);
        }
        out
    }

    fn read_bytes(bytes: &[u8]) -> Result<Capture> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.pcap");
        std::fs::write(&path, bytes).unwrap();
        read(&path)
    }

    #[test]
    fn a_snap_length_cuts_frames_and_every_one_is_kept() {
        let capture = read_bytes(&pcap_file(96, &[60, 1514, 96])).unwrap();
        let lens: Vec<_> = capture.frames.iter().map(|f| (f.data.len(), f.original_len)).collect();
        assert_eq!(lens, [(60, 60), (96, 1514), (96, 96)]);
        assert_eq!(capture.truncated_end, None);
    }

    #[test]
    fn a_file_cut_short_keeps_the_frames_before_the_cut_and_says_where() {
        let whole = pcap_file(1600, &[60, 70, 80]);
        let second_ends = 24 + 16 + 60 + 16 + 70;
        for cut in [second_ends + 5, second_ends + 16 + 10] {
            let capture = read_bytes(&whole[..cut]).unwrap();
            assert_eq!(capture.frames.len(), 2, "cut at {cut}");
            let why = capture.truncated_end.unwrap();
            assert!(
                why.contains("frame 2") && why.contains(&format!("byte {second_ends}")),
                "{why}"
            );
        }
    }

    #[test]
    fn what_is_not_a_capture_is_named() {
        let e = read_bytes(b"hello, this is text\n").unwrap_err().to_string();
        assert!(e.contains("not a pcap or pcapng file"), "{e}");
        let mut wrong_link = pcap_file(96, &[]);
        wrong_link[20] = 101;
        let e = read_bytes(&wrong_link).unwrap_err().to_string();
        assert!(e.contains("link type 101"), "{e}");
        assert!(read_bytes(b"\xd4").unwrap_err().to_string().contains("too short"));
    }
}
