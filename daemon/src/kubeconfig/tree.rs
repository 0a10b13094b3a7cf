//! Reading and writing yaml-edit's lossless tree: the few helpers every dialect shares.

use yaml_edit::{Mapping, YamlValue};

pub(super) fn text_of(node: &yaml_edit::YamlNode) -> Option<String> {
    node.as_scalar().map(|s| s.as_string())
}

pub(super) fn get_text(mapping: &Mapping, key: &str) -> Option<String> {
    mapping.get(key).as_ref().and_then(text_of)
}

pub(super) fn env_value(entries: &[(String, String)]) -> Vec<YamlValue> {
    entries
        .iter()
        .map(|(name, value)| {
            let mut map = std::collections::BTreeMap::new();
            map.insert("name".to_string(), YamlValue::from(name.as_str()));
            map.insert("value".to_string(), YamlValue::from(value.as_str()));
            YamlValue::Mapping(map)
        })
        .collect()
}
