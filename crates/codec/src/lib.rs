//! Encoded frames to pictures, for every stage that looks at video (the
//! detector, the web app's thumbnails). One `Decoder` per camera stream.

pub mod decode;

pub use decode::{DecodeError, Decoder, Picture, jpeg};
