//! docs/protocol.md is what SDK writers build from: it must name every frame kind the schema has
//! and every code a device can receive. The frame kinds come from the compiled descriptors, so a
//! new frame in client.proto fails this test until it is documented.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may panic on what it did not expect

use presence_proto::{
    FILE_DESCRIPTOR_SET,
    codes::{ErrorFrameCode, KickReason, LoginErrorCode, RequestErrorCode},
};
use prost::Message;
use prost_types::FileDescriptorSet;

fn protocol_doc() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md");
    std::fs::read_to_string(path).unwrap_or_else(|err| panic!("{path}: {err}"))
}

/// The message types of `presence.v1.<frame>`'s `oneof kind`.
fn frame_kinds(frame: &str) -> Vec<String> {
    let set = FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("descriptor set decodes");
    let message = set
        .file
        .iter()
        .filter(|file| file.package() == "presence.v1")
        .flat_map(|file| &file.message_type)
        .find(|message| message.name() == frame)
        .unwrap_or_else(|| panic!("{frame} is in the schema"));
    let kinds: Vec<String> = message
        .field
        .iter()
        .filter(|field| field.oneof_index.is_some())
        .map(|field| field.type_name().rsplit('.').next().unwrap_or_default().to_owned())
        .collect();
    assert!(!kinds.is_empty(), "{frame} has a oneof");
    kinds
}

fn undocumented<'a>(doc: &str, names: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    names.into_iter().filter(|name| !doc.contains(&format!("`{name}`"))).collect()
}

#[test]
fn every_frame_kind_is_documented() {
    let doc = protocol_doc();
    for frame in ["ClientFrame", "ServerFrame"] {
        let kinds = frame_kinds(frame);
        let missing = undocumented(&doc, kinds.iter().map(String::as_str));
        assert!(missing.is_empty(), "docs/protocol.md does not name these {frame} kinds: {missing:?}");
    }
}

#[test]
fn every_device_facing_code_is_documented() {
    let doc = protocol_doc();
    let codes = LoginErrorCode::ALL
        .iter()
        .map(|c| c.as_str())
        .chain(ErrorFrameCode::ALL.iter().map(|c| c.as_str()))
        .chain(KickReason::ALL.iter().map(|c| c.as_str()))
        .chain(RequestErrorCode::ALL.iter().map(|c| c.as_str()));
    let missing = undocumented(&doc, codes);
    assert!(missing.is_empty(), "docs/protocol.md does not name these codes: {missing:?}");
}
