//! Reading one file of a snapshot as a stream, blob by blob (each verified against its id), for
//! download links.

use std::io::{self, Read};

use tidemark_repo::Repository;
use tidemark_repo::format::Id;
use tidemark_repo::format::pack::BlobType;

/// Reads a file's content blobs in order, holding one blob in memory at a time.
pub struct BlobReader {
    repo: Repository,
    blobs: std::vec::IntoIter<Id>,
    current: Vec<u8>,
    offset: usize,
}

impl BlobReader {
    /// A reader over `blobs` of `repo`.
    pub fn new(repo: Repository, blobs: Vec<Id>) -> BlobReader {
        BlobReader { repo, blobs: blobs.into_iter(), current: Vec::new(), offset: 0 }
    }
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.offset >= self.current.len() {
            let Some(id) = self.blobs.next() else {
                return Ok(0);
            };
            self.current = self
                .repo
                .read_blob(BlobType::Data, &id)
                .map_err(|e| io::Error::other(format!("reading blob {}: {e}", id.short())))?;
            self.offset = 0;
        }
        let n = buf.len().min(self.current.len() - self.offset);
        buf[..n].copy_from_slice(&self.current[self.offset..self.offset + n]);
        self.offset += n;
        Ok(n)
    }
}
