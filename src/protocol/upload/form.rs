//! The multipart front-end: drives the parser over the request body, sends file parts
//! through `FileReceiver`s and keeps text fields, enforcing every form limit as it goes.

use crate::app::App;
use crate::config::UploadRoute;
use crate::error::Error;
use crate::http::body::GuardedBody;
use crate::http::multipart::{Event, Limits as ParserLimits, Parser};
use crate::namespace::{Verdict, control_in_name, has_control, normalise};
use crate::protocol::upload::file::{FileReceiver, StoredFile};
use bytes::{Bytes, BytesMut};
use hyper::body::Incoming;

/// One part of the form, received.
pub enum Received {
    Field { name: String, value: Bytes },
    File(Box<StoredFile>),
}

/// The part being read.
enum Current<'r> {
    None,
    /// A part whose bytes are discarded (an empty file input, a forged field).
    Skip,
    Field {
        name: String,
        value: Vec<u8>,
    },
    File(Box<FileReceiver<'r>>),
}

struct Counts {
    parts: u64,
    files: u64,
    fields: u64,
    field_bytes: u64,
    /// The file fields seen, exactly and normalised: two that read alike (`file`,
    /// `FILE`) would give the app two sets of metadata under one name.
    file_fields: Vec<(String, String)>,
}

/// Reads a whole multipart body. Every file in the result is stored; on error, all of
/// them (and any partial one) are already gone.
pub async fn receive(
    app: &App,
    route: &UploadRoute,
    body: &mut GuardedBody<Incoming>,
    boundary: &str,
) -> Result<Vec<Received>, Error> {
    let limits = &app.config.limits;
    let mut parser = Parser::new(
        boundary,
        ParserLimits {
            max_header_bytes: limits.max_header_bytes,
            max_preamble: limits.max_header_bytes,
        },
    );
    let mut buf = BytesMut::new();
    let mut eof = false;
    let mut out = Vec::new();
    let mut current = Current::None;
    let mut counts = Counts {
        parts: 0,
        files: 0,
        fields: 0,
        field_bytes: 0,
        file_fields: Vec::new(),
    };
    loop {
        let event = parser
            .feed(&mut buf, eof)
            .map_err(|e| Error::bad_request(e.to_string()))?;
        match event {
            None => match body.next_data().await? {
                Some(data) => parser.push(&mut buf, data),
                None => eof = true,
            },
            Some(Event::Part(head)) => {
                counts.parts += 1;
                if counts.parts > limits.max_parts {
                    return Err(Error::too_large(format!(
                        "more than {} parts",
                        limits.max_parts
                    )));
                }
                let name = head.name.unwrap_or_default();
                if name.is_empty() {
                    return Err(Error::bad_request("a part has an empty name"));
                }
                if has_control(&name) {
                    return Err(control_in_name());
                }
                current = match head.filename {
                    Some(f) if f.is_empty() => Current::Skip,
                    Some(f) => {
                        counts.files += 1;
                        if counts.files > route.max_files {
                            return Err(Error::too_large(format!(
                                "more than {} files",
                                route.max_files
                            )));
                        }
                        counts.file_field(&name)?;
                        let rx = FileReceiver::start(
                            app,
                            route,
                            &name,
                            &f,
                            head.content_type.as_deref(),
                        )
                        .await?;
                        Current::File(Box::new(rx))
                    }
                    None => start_field(app, route, name, &mut counts)?,
                };
            }
            Some(Event::Data(data)) => match &mut current {
                Current::File(rx) => rx.push(data).await?,
                Current::Field { name, value } => {
                    add_field_bytes(app, &mut counts, data.len())?;
                    if (value.len() + data.len()) as u64 > limits.max_field_bytes {
                        return Err(Error::too_large(format!(
                            "field {name:?} is larger than {} bytes",
                            limits.max_field_bytes
                        )));
                    }
                    value.extend_from_slice(&data);
                }
                // Discarded bytes still count, so nothing streams in without a bound.
                Current::Skip | Current::None => add_field_bytes(app, &mut counts, data.len())?,
            },
            Some(Event::PartEnd) => match std::mem::replace(&mut current, Current::None) {
                Current::File(rx) => out.push(Received::File(Box::new(rx.finish().await?))),
                Current::Field { name, value } => out.push(Received::Field {
                    name,
                    value: value.into(),
                }),
                Current::Skip | Current::None => {}
            },
            Some(Event::End) => break,
        }
    }
    drain_epilogue(body).await?;
    Ok(out)
}

impl Counts {
    /// Records a file field; refuses one whose name reads like another's.
    fn file_field(&mut self, name: &str) -> Result<(), Error> {
        let n = normalise(name);
        if self
            .file_fields
            .iter()
            .any(|(exact, norm)| *norm == n && exact != name)
        {
            return Err(Error::bad_request(format!(
                "two file fields whose names read alike: {name:?}"
            )));
        }
        if !self.file_fields.iter().any(|(exact, _)| exact == name) {
            self.file_fields.push((name.to_string(), n));
        }
        Ok(())
    }
}

fn start_field<'r>(
    app: &App,
    route: &UploadRoute,
    name: String,
    counts: &mut Counts,
) -> Result<Current<'r>, Error> {
    match app.config.namespace.screen(&name) {
        Verdict::Keep => {}
        Verdict::Drop => {
            tracing::warn!(route = %route.path, field = %name, "dropped a client field that could pass for porter's metadata");
            return Ok(Current::Skip);
        }
        Verdict::Refuse => return Err(control_in_name()),
    }
    counts.fields += 1;
    let max = app.config.limits.max_fields;
    if counts.fields > max {
        return Err(Error::too_large(format!("more than {max} fields")));
    }
    Ok(Current::Field {
        name,
        value: Vec::new(),
    })
}

fn add_field_bytes(app: &App, counts: &mut Counts, n: usize) -> Result<(), Error> {
    let limits = &app.config.limits;
    counts.field_bytes += n as u64;
    if counts.field_bytes > limits.max_fields_bytes {
        return Err(Error::too_large(format!(
            "the form's fields are larger than {} bytes",
            limits.max_fields_bytes
        )));
    }
    Ok(())
}

/// Reads whatever follows the closing boundary, within a bound, so the connection can
/// be reused.
async fn drain_epilogue(body: &mut GuardedBody<Incoming>) -> Result<(), Error> {
    let mut left: usize = 64 * 1024;
    while let Some(d) = body.next_data().await? {
        left = left
            .checked_sub(d.len())
            .ok_or_else(|| Error::bad_request("too much data after the closing boundary"))?;
    }
    Ok(())
}
