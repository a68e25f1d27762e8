//! The JSON Schema of job files (`runner schema`), generated with schemars from the raw serde
//! types that parse them ([`super::raw::RawJob`]), so a field added there appears here. Editors
//! use it for completion and checks (`# yaml-language-server: $schema=...`); `runner validate`
//! stays the authority: rules across fields and on the filesystem are not in the schema.

/// The schema (JSON Schema 2020-12) as a JSON value.
pub fn job_schema() -> serde_json::Value {
    let generator = schemars::generate::SchemaSettings::draft2020_12()
        .for_deserialize()
        .into_generator();
    let mut schema = generator.into_root_schema_for::<super::raw::RawJob>();
    schema.insert("title".into(), "runner job file".into());
    schema.insert(
        "description".into(),
        "One job for `runner`, in YAML: a plain job (`command`) or an agent job (`task`). \
         Fields, defaults and rules: the README's \"Job files\"."
            .into(),
    );
    schema.to_value()
}
