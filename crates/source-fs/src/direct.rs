//! Writing large restored files with `O_DIRECT` from a page-aligned staging buffer.
//!
//! Restore was bound by the kernel copying every restored byte into the page cache (bench/RESULTS.md).
//! For large files the decrypted blobs are staged in an aligned buffer and written straight to the
//! device; the last partial page goes through the ordinary descriptor, and a filesystem that refuses
//! direct I/O (EINVAL) gets ordinary writes for the rest of the file.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// Files at least this large are written with direct I/O.
pub(crate) const DIRECT_MIN: u64 = 4 * 1024 * 1024;
const ALIGN: usize = 4096;
const STAGE: usize = 8 * 1024 * 1024;

/// Sequential writer over a new file: stages, writes aligned runs with `O_DIRECT`.
pub(crate) struct DirectSink<'f> {
    file: &'f File,
    direct: Option<File>,
    stage: Vec<u8>,
    pad: usize,
    /// File offset of the first staged byte.
    offset: u64,
}

fn is_einval(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EINVAL)
}

impl<'f> DirectSink<'f> {
    /// A sink over `file`, which was just created at `path` (opened again with `O_DIRECT`).
    pub(crate) fn new(path: &Path, file: &'f File) -> io::Result<Self> {
        let direct = match OpenOptions::new().write(true).custom_flags(libc::O_DIRECT | libc::O_NOFOLLOW).open(path) {
            Ok(d) => Some(d),
            Err(e) if is_einval(&e) => None,
            Err(e) => return Err(e),
        };
        let mut stage: Vec<u8> = Vec::with_capacity(STAGE + ALIGN);
        let pad = match stage.as_ptr().align_offset(ALIGN) {
            n if n < ALIGN => n,
            _ => 0,
        };
        stage.resize(pad, 0);
        Ok(DirectSink { file, direct, stage, pad, offset: 0 })
    }

    /// Append `data` to the file.
    pub(crate) fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        if self.direct.is_none() {
            self.file.write_all_at(data, self.offset)?;
            self.offset += data.len() as u64;
            return Ok(());
        }
        while !data.is_empty() {
            let room = STAGE - (self.stage.len() - self.pad);
            let n = room.min(data.len());
            self.stage.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.stage.len() - self.pad == STAGE {
                self.flush_aligned()?;
            }
        }
        Ok(())
    }

    /// Write the aligned prefix of the stage; keep the rest staged.
    fn flush_aligned(&mut self) -> io::Result<()> {
        let filled = self.stage.len() - self.pad;
        let aligned = filled / ALIGN * ALIGN;
        if aligned == 0 {
            return Ok(());
        }
        let run = &self.stage[self.pad..self.pad + aligned];
        match self.direct.as_ref().map(|d| d.write_all_at(run, self.offset)) {
            Some(Ok(())) => {}
            Some(Err(e)) if is_einval(&e) => {
                self.file.write_all_at(run, self.offset)?;
                self.direct = None;
            }
            Some(Err(e)) => return Err(e),
            None => self.file.write_all_at(run, self.offset)?,
        }
        self.offset += aligned as u64;
        self.stage.copy_within(self.pad + aligned.., self.pad);
        self.stage.truncate(self.pad + filled - aligned);
        Ok(())
    }

    /// Write what is still staged; the file then holds everything written.
    pub(crate) fn finish(mut self) -> io::Result<()> {
        self.flush_aligned()?;
        let tail = &self.stage[self.pad..];
        self.file.write_all_at(tail, self.offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_of_any_size_land_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = OpenOptions::new().write(true).create_new(true).open(&path).unwrap();
        let data: Vec<u8> =
            (0..(STAGE * 2 + 12_345) as u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 9) as u8).collect();
        let mut sink = DirectSink::new(&path, &file).unwrap();
        let mut rest = &data[..];
        for size in [1usize, 4095, 4097, 1 << 20, 3 << 20, 7 << 20].iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let n = (*size).min(rest.len());
            sink.write(&rest[..n]).unwrap();
            rest = &rest[n..];
        }
        sink.finish().unwrap();
        drop(file);
        assert_eq!(std::fs::read(&path).unwrap(), data);
    }
}
