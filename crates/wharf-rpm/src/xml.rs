//! Small helpers over quick-xml shared by the repomd and primary readers.

use quick_xml::events::BytesStart;

use crate::RpmError;

/// An attribute's unescaped value, if the element has it.
pub(crate) fn attribute(element: &BytesStart<'_>, name: &[u8]) -> Result<Option<String>, RpmError> {
    for attr in element.attributes() {
        let attr = attr.map_err(|e| RpmError::Metadata(format!("malformed attribute: {e}")))?;
        if attr.key.as_ref() == name {
            let value = attr
                .unescape_value()
                .map_err(|e| RpmError::Metadata(format!("malformed attribute value: {e}")))?;
            return Ok(Some(value.into_owned()));
        }
    }
    Ok(None)
}

/// A number in an attribute or element, named for the message.
pub(crate) fn number<T: std::str::FromStr>(text: &str, what: &str) -> Result<T, RpmError> {
    text.trim()
        .parse()
        .map_err(|_| RpmError::Metadata(format!("{what}: {text:?} is not a number")))
}

pub(crate) fn xml_error(context: &str, e: quick_xml::Error) -> RpmError {
    RpmError::Metadata(format!("{context}: not well-formed XML: {e}"))
}
