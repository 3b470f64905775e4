//! `QueryRequest`, written by hand so that its `user_ids` decode into one buffer.
//!
//! prost decodes `repeated string` into a `Vec<String>`: one allocation per id, freed after the
//! reply. A batch query carries up to 500 ids, and the registry's allocator (the ids' mallocs,
//! their frees, and the consolidation they cause) took about 15 % of its query profile
//! (docs/benchmarks.md, batch query). [`UserIds`] holds every id in one `String` with their
//! ends beside it: two allocations per request. The wire format is the `.proto`'s, unchanged
//! (`presence/v1/registry.proto`; `build.rs` points prost at this type), and a test holds it to
//! a prost-generated twin.

use std::fmt;

use prost::{
    DecodeError, Message,
    bytes::{Buf, BufMut},
    encoding::{self, DecodeContext, WireType},
};

/// Presence of up to `MAX_IDS_PER_QUERY` users of one app, answered in the order asked.
#[derive(Clone, Default, PartialEq, Eq, Debug)]
pub struct QueryRequest {
    pub app_id: String,
    pub user_ids: UserIds,
    pub detail: bool,
    /// Leave `user_id` empty in the results: the caller holds the ids, in the same order, and
    /// neither side then encodes or decodes them again.
    pub without_user_ids: bool,
}

const APP_ID: u32 = 1;
const USER_IDS: u32 = 2;
const DETAIL: u32 = 3;
const WITHOUT_USER_IDS: u32 = 4;

impl Message for QueryRequest {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        if !self.app_id.is_empty() {
            encoding::string::encode(APP_ID, &self.app_id, buf);
        }
        for id in &self.user_ids {
            encoding::encode_key(USER_IDS, WireType::LengthDelimited, buf);
            encoding::encode_varint(id.len() as u64, buf);
            buf.put_slice(id.as_bytes());
        }
        if self.detail {
            encoding::bool::encode(DETAIL, &self.detail, buf);
        }
        if self.without_user_ids {
            encoding::bool::encode(WITHOUT_USER_IDS, &self.without_user_ids, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            APP_ID => encoding::string::merge(wire_type, &mut self.app_id, buf, ctx),
            USER_IDS => {
                encoding::check_wire_type(WireType::LengthDelimited, wire_type)?;
                self.user_ids.merge_one(buf)
            }
            DETAIL => encoding::bool::merge(wire_type, &mut self.detail, buf, ctx),
            WITHOUT_USER_IDS => encoding::bool::merge(wire_type, &mut self.without_user_ids, buf, ctx),
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        let app_id =
            if self.app_id.is_empty() { 0 } else { encoding::string::encoded_len(APP_ID, &self.app_id) };
        let ids: usize = self
            .user_ids
            .iter()
            .map(|id| encoding::key_len(USER_IDS) + encoding::encoded_len_varint(id.len() as u64) + id.len())
            .sum();
        let flag = |set: bool, tag| if set { encoding::bool::encoded_len(tag, &set) } else { 0 };
        app_id + ids + flag(self.detail, DETAIL) + flag(self.without_user_ids, WITHOUT_USER_IDS)
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

/// User ids in order, in one buffer.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct UserIds {
    text: String,
    /// Where each id ends in `text`.
    ends: Vec<usize>,
}

impl UserIds {
    /// Room for `ids` ids of `bytes` bytes in all.
    pub fn with_capacity(ids: usize, bytes: usize) -> Self {
        Self { text: String::with_capacity(bytes), ends: Vec::with_capacity(ids) }
    }

    pub fn push(&mut self, id: &str) {
        self.text.push_str(id);
        self.ends.push(self.text.len());
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The `index`th id.
    pub fn get(&self, index: usize) -> Option<&str> {
        let end = *self.ends.get(index)?;
        let start = index.checked_sub(1).map_or(0, |before| self.ends[before]);
        self.text.get(start..end)
    }

    /// The ids at `indexes`, in that order (each index below [`UserIds::len`]).
    pub fn select<'a>(&self, indexes: impl IntoIterator<Item = &'a usize>) -> UserIds {
        indexes.into_iter().filter_map(|index| self.get(*index)).collect()
    }

    pub fn iter(&self) -> Iter<'_> {
        Iter { ids: self, next: 0 }
    }

    /// Appends the length-delimited id at the front of `buf` (its key already read), checked to
    /// be UTF-8 as prost checks a `string`.
    fn merge_one(&mut self, buf: &mut impl Buf) -> Result<(), DecodeError> {
        let len = encoding::decode_varint(buf)?;
        let len = usize::try_from(len).ok().filter(|len| *len <= buf.remaining()).ok_or_else(underflow)?;
        if buf.chunk().len() >= len {
            let id = std::str::from_utf8(&buf.chunk()[..len]).map_err(|_| not_utf8())?;
            self.push(id);
        } else {
            // Split across chunks (tonic hands one contiguous buffer; a caller may not).
            let mut bytes = vec![0; len];
            buf.copy_to_slice(&mut bytes);
            self.push(std::str::from_utf8(&bytes).map_err(|_| not_utf8())?);
            return Ok(());
        }
        buf.advance(len);
        Ok(())
    }
}

// prost names its decode errors only through this constructor, deprecated for outside use but
// the one way a hand-written message can say what is wrong.
#[allow(deprecated)]
fn not_utf8() -> DecodeError {
    DecodeError::new("invalid string value: data is not UTF-8 encoded")
}

#[allow(deprecated)]
fn underflow() -> DecodeError {
    DecodeError::new("buffer underflow")
}

impl fmt::Debug for UserIds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<S: AsRef<str>> FromIterator<S> for UserIds {
    fn from_iter<I: IntoIterator<Item = S>>(ids: I) -> Self {
        let mut all = Self::default();
        for id in ids {
            all.push(id.as_ref());
        }
        all
    }
}

impl From<Vec<String>> for UserIds {
    fn from(ids: Vec<String>) -> Self {
        ids.iter().collect()
    }
}

impl<'a> IntoIterator for &'a UserIds {
    type Item = &'a str;
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

/// The ids of a [`UserIds`], in order.
#[derive(Clone)]
pub struct Iter<'a> {
    ids: &'a UserIds,
    next: usize,
}

impl<'a> Iterator for Iter<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let id = self.ids.get(self.next)?;
        self.next += 1;
        Some(id)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.ids.len() - self.next;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Iter<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    /// What prost generates for the same message, to hold the hand-written one to.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Generated {
        #[prost(string, tag = "1")]
        app_id: String,
        #[prost(string, repeated, tag = "2")]
        user_ids: Vec<String>,
        #[prost(bool, tag = "3")]
        detail: bool,
        #[prost(bool, tag = "4")]
        without_user_ids: bool,
    }

    fn pairs() -> Vec<(QueryRequest, Generated)> {
        let ids =
            vec!["q1".to_owned(), String::new(), "é-ünïcode".to_owned(), "x".repeat(300), "q1".to_owned()];
        [(false, false), (true, false), (false, true), (true, true)]
            .into_iter()
            .flat_map(|(detail, without_user_ids)| {
                let ids = ids.clone();
                [0, 1, 5].map(move |n| {
                    let user_ids = ids[..n].to_vec();
                    (
                        QueryRequest {
                            app_id: "app".into(),
                            user_ids: user_ids.clone().into(),
                            detail,
                            without_user_ids,
                        },
                        Generated { app_id: "app".into(), user_ids, detail, without_user_ids },
                    )
                })
            })
            .collect()
    }

    #[test]
    fn encodes_and_decodes_as_prost_does() {
        for (ours, generated) in pairs() {
            let bytes = ours.encode_to_vec();
            assert_eq!(bytes, generated.encode_to_vec(), "{ours:?}");
            assert_eq!(ours.encoded_len(), bytes.len());
            assert_eq!(QueryRequest::decode(&bytes[..]).ok(), Some(ours.clone()));
            let ids: Vec<&str> = ours.user_ids.iter().collect();
            assert_eq!(ids, generated.user_ids.iter().map(String::as_str).collect::<Vec<_>>());
        }
        assert_eq!(QueryRequest::default().encode_to_vec(), Vec::<u8>::new());
    }

    #[test]
    fn reads_ids_split_across_chunks() {
        let (ours, _) = pairs().pop().expect("pairs");
        let bytes = ours.encode_to_vec();
        for cut in 0..bytes.len() {
            let mut split = Buf::chain(&bytes[..cut], &bytes[cut..]);
            assert_eq!(QueryRequest::decode(&mut split).ok().as_ref(), Some(&ours), "cut at {cut}");
        }
    }

    #[test]
    fn refuses_what_prost_refuses() {
        let valid =
            Generated { app_id: "a".into(), user_ids: vec!["ok".into(), "é".into()], ..Default::default() };
        let bytes = valid.encode_to_vec();
        // Every truncation, and the last id's "é" made invalid UTF-8 (its first byte alone).
        let mut not_utf8 = bytes.clone();
        let at = not_utf8.len() - 2;
        not_utf8[at - 1] = 1;
        not_utf8.truncate(at + 1);
        let cases = (0..bytes.len()).map(|cut| bytes[..cut].to_vec()).chain([not_utf8]);
        for case in cases {
            let generated = Generated::decode(&case[..]).is_ok();
            let ours = QueryRequest::decode(&case[..]);
            assert_eq!(ours.is_ok(), generated, "{case:?}: {ours:?}");
        }
    }

    #[test]
    fn indexes_ids_in_order() {
        let ids: UserIds = ["a", "", "bc"].into_iter().collect();
        assert_eq!(
            (ids.len(), ids.get(0), ids.get(1), ids.get(2), ids.get(3)),
            (3, Some("a"), Some(""), Some("bc"), None)
        );
        assert_eq!(ids.iter().len(), 3);
        assert_eq!(ids.select(&[2, 0, 2]), ["bc", "a", "bc"].into_iter().collect());
        assert_eq!(format!("{ids:?}"), r#"["a", "", "bc"]"#);
    }
}
