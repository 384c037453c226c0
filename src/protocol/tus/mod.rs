//! The tus family on one `tus` route: tus 1.0 (`v1`) and the IETF resumable-upload
//! draft (`draft`, picked by `Upload-Draft-Interop-Version`), over the same uploads, so
//! either may continue one the other began. The headers both read are parsed once,
//! in `headers`, so the two cannot disagree about them.

pub mod draft;
pub mod headers;
pub mod v1;
