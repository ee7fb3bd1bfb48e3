//! Go's decoding rules for our serde types: `null` is the zero value, unknown fields are skipped
//! but reported.

use serde::de::DeserializeOwned;

/// Go clients send `null` for empty slices, maps and (sometimes) strings, and Go's decoder reads
/// `null` as "leave the zero value": read it as the field's default.
pub fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + serde::Deserialize<'de>,
{
    use serde::Deserialize;
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// For `skip_serializing_if`: Go's `omitempty` (a zero value is left out).
pub(crate) fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// Declares a wire struct whose every field decodes as Go's `encoding/json` does: a missing
/// field or a `null` leaves the field's zero value (`Default`). Other serde attributes on the
/// fields pass through; a field must not carry its own `default`.
macro_rules! go_struct {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $(
                $(#[$fmeta:meta])*
                pub $field:ident : $ty:ty
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        pub struct $name {
            $(
                $(#[$fmeta])*
                #[serde(default, deserialize_with = "crate::null_as_default")]
                pub $field: $ty,
            )*
        }
    };
}

/// A body decoded with the paths of the fields that were ignored (`source.server`,
/// `devices`...): Go ignores unknown fields silently, callers may want to log them.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded<T> {
    pub value: T,
    pub ignored: Vec<String>,
}

/// Decode a JSON body as LXD's Go handlers do, reporting the fields nothing read.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<Decoded<T>, serde_json::Error> {
    let mut ignored = Vec::new();
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_ignored::deserialize(&mut de, |path| ignored.push(path.to_string()))?;
    de.end()?;
    Ok(Decoded { value, ignored })
}

/// [`decode`] for a body already parsed (an operation's or event's `metadata`, say).
pub fn decode_value<T: DeserializeOwned>(
    value: serde_json::Value,
) -> Result<Decoded<T>, serde_json::Error> {
    let mut ignored = Vec::new();
    let value = serde_ignored::deserialize(value, |path| ignored.push(path.to_string()))?;
    Ok(Decoded { value, ignored })
}

/// [`decode_value`] for a reader that has no use for the report (a client reading the
/// server's answers): the same value, without the tracking, whose code is instantiated for every
/// type read and made up a twentieth of the command-line client.
pub fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, serde_json::Error> {
    T::deserialize(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    go_struct! {
        #[derive(Debug, Default, PartialEq, Deserialize)]
        pub struct Sample {
            pub name: String,
            pub count: u32,
            pub tags: Vec<String>,
        }
    }

    #[test]
    fn nulls_and_missing_fields_are_zero_values() {
        let d: Decoded<Sample> = decode(br#"{"name":null,"tags":null}"#).unwrap();
        assert_eq!(d.value, Sample::default());
        assert!(d.ignored.is_empty());
    }

    #[test]
    fn unknown_fields_are_reported_not_refused() {
        let d: Decoded<Sample> =
            decode(br#"{"name":"a","extra":{"deep":1},"count":2,"more":null}"#).unwrap();
        assert_eq!((d.value.name.as_str(), d.value.count), ("a", 2));
        assert_eq!(d.ignored, ["extra", "more"]);
    }

    #[test]
    fn from_value_reads_as_decode_value_does() {
        for text in [
            r#"{"name":null,"tags":null}"#,
            r#"{"name":"a","extra":{"deep":1},"count":2,"tags":["x"]}"#,
            r#"{"count":-1}"#,
            r#"{"name":1}"#,
        ] {
            let v: serde_json::Value = serde_json::from_str(text).unwrap();
            let plain = from_value::<Sample>(v.clone()).ok();
            let reported = decode_value::<Sample>(v).ok().map(|d| d.value);
            assert_eq!(plain, reported, "{text}");
        }
    }

    #[test]
    fn numbers_go_refuses_are_refused() {
        for bad in [
            &br#"{"count":-1}"#[..],
            br#"{"count":1.5}"#,
            br#"{"count":"1"}"#,
            br#"{"count":4294967296}"#,
            br#"{"name":1}"#,
            br#"{"count":1} trailing"#,
        ] {
            assert!(
                decode::<Sample>(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
