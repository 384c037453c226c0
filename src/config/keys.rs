//! Every key the configuration file can hold, read off the serde structs of `raw`, so
//! a test can check that `docs/reference/config.md` documents each one: a key added to
//! a struct and not to the reference fails the build's tests.
//!
//! It works by deserializing `RawConfig` from a deserializer that has no data of its
//! own: serde hands it each struct's field names, and it follows every field (an
//! option as present, a list as one element, a table of user-chosen names as one
//! name) down to the values, recording the dotted path of each.

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use std::cell::RefCell;
use std::collections::BTreeSet;

/// The dotted path of every key: `server.listen`, `upload.path` (for `[[upload]]`),
/// `internal.headers` (a table of the user's own names). An error means the walk
/// stopped early (a field type it cannot follow, such as a plain enum) and the keys
/// after it were not seen: the caller must fail rather than check a short list.
pub fn all() -> Result<BTreeSet<String>, String> {
    let found = RefCell::new(BTreeSet::new());
    let walk = Walk {
        path: "",
        found: &found,
    };
    super::raw::RawConfig::deserialize(walk).map_err(|e| format!("the key walk stopped: {e}"))?;
    Ok(found.into_inner())
}

#[derive(Clone, Copy)]
struct Walk<'a> {
    path: &'a str,
    found: &'a RefCell<BTreeSet<String>>,
}

impl Walk<'_> {
    fn leaf(self) {
        self.found.borrow_mut().insert(self.path.to_string());
    }
}

#[derive(Debug)]
struct Stop(String);

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Stop {}

impl de::Error for Stop {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        Stop(msg.to_string())
    }
}

macro_rules! leaf {
    ($($method:ident => $visit:ident($($value:expr)?)),* $(,)?) => {
        $(fn $method<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Stop> {
            self.leaf();
            v.$visit($($value)?)
        })*
    };
}

impl<'de> de::Deserializer<'de> for Walk<'_> {
    type Error = Stop;

    leaf! {
        deserialize_any => visit_str("1"),
        deserialize_bool => visit_bool(false),
        deserialize_i8 => visit_i64(0), deserialize_i16 => visit_i64(0),
        deserialize_i32 => visit_i64(0), deserialize_i64 => visit_i64(0),
        deserialize_u8 => visit_u64(0), deserialize_u16 => visit_u64(0),
        deserialize_u32 => visit_u64(0), deserialize_u64 => visit_u64(0),
        deserialize_f32 => visit_f64(0.0), deserialize_f64 => visit_f64(0.0),
        deserialize_char => visit_char('x'),
        deserialize_str => visit_str(""), deserialize_string => visit_str(""),
        deserialize_bytes => visit_bytes(b""), deserialize_byte_buf => visit_bytes(b""),
        deserialize_unit => visit_unit(),
        deserialize_identifier => visit_str(""),
        deserialize_ignored_any => visit_unit(),
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Stop> {
        v.visit_some(self)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        v: V,
    ) -> Result<V::Value, Stop> {
        self.deserialize_unit(v)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        v: V,
    ) -> Result<V::Value, Stop> {
        v.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Stop> {
        v.visit_seq(One(Some(self)))
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, v: V) -> Result<V::Value, Stop> {
        self.deserialize_seq(v)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: usize,
        v: V,
    ) -> Result<V::Value, Stop> {
        self.deserialize_seq(v)
    }

    /// A table of the user's own names (headers): the key is the table itself.
    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Stop> {
        self.leaf();
        v.visit_map(Fields::new(self, &[]))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        names: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Stop> {
        v.visit_map(Fields::new(self, names))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Stop> {
        self.leaf();
        Err(Stop("an enum is a leaf".into()))
    }
}

/// A list of one element, walked at the list's own path.
struct One<'a>(Option<Walk<'a>>);

impl<'de> SeqAccess<'de> for One<'_> {
    type Error = Stop;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Stop> {
        match self.0.take() {
            Some(walk) => seed.deserialize(walk).map(Some),
            None => Ok(None),
        }
    }
}

/// A struct's fields, each walked at `path.field`.
struct Fields<'a> {
    walk: Walk<'a>,
    names: &'static [&'static str],
    next: usize,
    child: String,
}

impl<'a> Fields<'a> {
    /// The fields `names` of the table at `walk`'s path, from the first.
    fn new(walk: Walk<'a>, names: &'static [&'static str]) -> Fields<'a> {
        Fields {
            walk,
            names,
            next: 0,
            child: String::new(),
        }
    }
}

impl<'de> MapAccess<'de> for Fields<'_> {
    type Error = Stop;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Stop> {
        let Some(name) = self.names.get(self.next) else {
            return Ok(None);
        };
        self.next += 1;
        self.child = match self.walk.path {
            "" => name.to_string(),
            parent => format!("{parent}.{name}"),
        };
        seed.deserialize(name.into_deserializer()).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Stop> {
        let walk = Walk {
            path: &self.child,
            found: self.walk.found,
        };
        // A field whose placeholder does not fit its type still counts as found.
        match seed.deserialize(walk) {
            Ok(v) => Ok(v),
            Err(e) => {
                walk.leaf();
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_walk_reaches_keys_of_every_shape() {
        let keys = super::all().expect("the walk reaches every field");
        for k in [
            "server.listen",        // one or many strings
            "server.tls.cert",      // an optional table
            "storage.s3.bucket",    // a table in a table
            "upload.path",          // an array of tables
            "upload.max_file_size", // a size
            "internal.headers",     // a table of the user's own names
            "log.format",
        ] {
            assert!(keys.contains(k), "{k} not found in {keys:?}");
        }
    }

    /// A key the structs have and the reference does not is a test failure.
    #[test]
    fn every_key_is_in_the_reference() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/reference/config.md");
        let doc = std::fs::read_to_string(path).expect("docs/reference/config.md");
        let missing: Vec<String> = super::all()
            .expect("the walk reaches every field")
            .into_iter()
            .filter(|k| !doc.contains(&format!("`{k}`")))
            .collect();
        assert!(
            missing.is_empty(),
            "keys docs/reference/config.md does not document: {missing:?}"
        );
    }

    #[test]
    #[ignore = "prints every key: cargo test --lib config::keys -- --ignored --nocapture"]
    fn print_keys() {
        for k in super::all().expect("the walk reaches every field") {
            println!("{k}");
        }
    }
}
