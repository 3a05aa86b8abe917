//! Parquet in and out, through the `parquet` crate's record reader and column writer (no Arrow:
//! the `arrow` feature would double the crate's build time and these files are small).
//!
//! Reading: any Parquet file (snappy, as verl and pandas write them; uncompressed too), every row
//! turned into a JSON object (strings, numbers, booleans, nested structs and lists, e.g. verl's
//! `prompt: list<struct<role, content>>` and `reward_model: struct<ground_truth, style>`);
//! [`super::formats`] then picks the problem and answer. Other compressions (zstd, gzip, lz4,
//! brotli) are not compiled in and give a clear error naming the file.
//!
//! Writing (snappy), two shapes ([`ParquetShape`]):
//! * plain: `problem: string`, `answer: string` (or `list<string>` when any gold is a list);
//! * verl's, as DeepScaleR's `deepscaler_dataset.py` writes it: `data_source: string`,
//!   `prompt: list<struct<content: string, role: string>>` (one user message, the problem in the
//!   prompt template), `ability: string` ("math"), `reward_model: struct<ground_truth, style>`
//!   ("rule"), `extra_info: struct<index: int64>`. Other fields are not written to Parquet.

use super::formats::{Item, ParquetShape};
use crate::reward::Gold;
use anyhow::{anyhow, Context, Result};
use parquet::basic::Compression;
use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::writer::SerializedFileWriter;
use parquet::record::Field;
use serde_json::{Map, Value};
use std::path::Path;
use std::sync::Arc;

/// The top-level column names and every row as a JSON object. Errors name the file and row.
pub fn read_rows(path: &Path) -> Result<(Vec<String>, Vec<Map<String, Value>>)> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let reader = SerializedFileReader::new(file).map_err(|e| anyhow!("{}: not a readable Parquet file: {e}", path.display()))?;
    let columns = reader.metadata().file_metadata().schema().get_fields().iter().map(|f| f.name().to_string()).collect();
    let mut rows = Vec::with_capacity(reader.metadata().file_metadata().num_rows().max(0) as usize);
    let iter = reader.get_row_iter(None).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    for (i, row) in iter.enumerate() {
        let row = row.map_err(|e| anyhow!("{}: record {i}: cannot decode: {e}", path.display()))?;
        rows.push(row.get_column_iter().map(|(k, f)| (k.clone(), to_json(f))).collect());
    }
    Ok((columns, rows))
}

/// A Parquet value as JSON. Temporal and decimal values become their display strings (a data
/// file's problem and answer are never those; they are only carried along).
fn to_json(f: &Field) -> Value {
    match f {
        Field::Null => Value::Null,
        Field::Bool(b) => Value::Bool(*b),
        Field::Byte(x) => (*x).into(),
        Field::Short(x) => (*x).into(),
        Field::Int(x) => (*x).into(),
        Field::Long(x) => (*x).into(),
        Field::UByte(x) => (*x).into(),
        Field::UShort(x) => (*x).into(),
        Field::UInt(x) => (*x).into(),
        Field::ULong(x) => (*x).into(),
        Field::Float(x) => serde_json::Number::from_f64(f64::from(*x)).map_or(Value::Null, Value::Number),
        Field::Double(x) => serde_json::Number::from_f64(*x).map_or(Value::Null, Value::Number),
        Field::Str(s) => Value::String(s.clone()),
        Field::Bytes(b) => match b.as_utf8() {
            Ok(s) => Value::String(s.to_string()),
            Err(_) => Value::String(f.to_string()),
        },
        Field::Group(row) => Value::Object(row.get_column_iter().map(|(k, v)| (k.clone(), to_json(v))).collect()),
        Field::ListInternal(list) => Value::Array(list.elements().iter().map(to_json).collect()),
        Field::MapInternal(map) => Value::Object(
            map.entries()
                .iter()
                .map(|(k, v)| match k {
                    Field::Str(s) => (s.clone(), to_json(v)),
                    other => (other.to_string(), to_json(v)),
                })
                .collect(),
        ),
        other => Value::String(other.to_string()),
    }
}

/// One leaf column being filled: values plus definition and repetition levels.
#[derive(Default)]
struct Leaf {
    /// An int64 column (else a string one).
    int: bool,
    strings: Vec<ByteArray>,
    ints: Vec<i64>,
    def: Vec<i16>,
    rep: Vec<i16>,
}

impl Leaf {
    fn string(&mut self, s: &str, def: i16, rep: i16) {
        self.strings.push(ByteArray::from(s));
        self.def.push(def);
        self.rep.push(rep);
    }
    fn null(&mut self, def: i16) {
        self.def.push(def);
        self.rep.push(0);
    }
}

/// The schema text of an answer field: a string, or a list of strings.
fn answer_schema(name: &str, list: bool) -> String {
    if list {
        format!("optional group {name} (LIST) {{ repeated group list {{ optional binary element (UTF8); }} }}")
    } else {
        format!("optional binary {name} (UTF8);")
    }
}

/// Appends one gold to its leaf; `d` is the definition level of the answer's parent (0 at the
/// top level, 1 inside `reward_model`).
fn push_answer(leaf: &mut Leaf, gold: Option<Gold>, list: bool, d: i16) {
    match (gold, list) {
        (None, _) => leaf.null(d),
        (Some(g), false) => leaf.string(&g.answers()[0], d + 1, 0),
        (Some(g), true) if g.answers().is_empty() => leaf.null(d + 1),
        (Some(g), true) => {
            for (j, a) in g.answers().iter().enumerate() {
                leaf.string(a, d + 3, i16::from(j > 0));
            }
        }
    }
}

/// The Parquet file of `items` (snappy) in the given shape.
pub fn to_bytes(items: &[&Item], shape: ParquetShape, template: &str) -> Result<Vec<u8>> {
    let golds: Vec<Option<Gold>> = items.iter().map(|it| it.gold()).collect();
    // A list column only when needed: most sets have one string per problem.
    let list = golds.iter().flatten().any(|g| matches!(g, Gold::Any(_)));
    let (schema, mut leaves) = match shape {
        ParquetShape::Plain => {
            let schema = format!("message scalerl {{ optional binary problem (UTF8); {} }}", answer_schema("answer", list));
            let mut problem = Leaf::default();
            let mut answer = Leaf::default();
            for (it, g) in items.iter().zip(golds) {
                problem.string(&it.problem, 1, 0);
                push_answer(&mut answer, g, list, 0);
            }
            (schema, vec![problem, answer])
        }
        ParquetShape::Verl => {
            let schema = format!(
                "message schema {{ optional binary data_source (UTF8); \
                 optional group prompt (LIST) {{ repeated group list {{ optional group element {{ \
                 optional binary content (UTF8); optional binary role (UTF8); }} }} }} \
                 optional binary ability (UTF8); \
                 optional group reward_model {{ {} optional binary style (UTF8); }} \
                 optional group extra_info {{ optional int64 index; }} }}",
                answer_schema("ground_truth", list)
            );
            let mut l: Vec<Leaf> = (0..7).map(|_| Leaf::default()).collect();
            l[6].int = true;
            for (i, (it, g)) in items.iter().zip(golds).enumerate() {
                let source = it.rest.get("data_source").and_then(Value::as_str).unwrap_or("");
                l[0].string(source, 1, 0);
                // prompt.list.element.{content, role}: prompt, list, element, leaf all present.
                l[1].string(&crate::eval::render_prompt(template, &it.problem), 4, 0);
                l[2].string("user", 4, 0);
                l[3].string("math", 1, 0);
                push_answer(&mut l[4], g, list, 1);
                l[5].string("rule", 2, 0);
                l[6].ints.push(i as i64);
                l[6].def.push(2);
                l[6].rep.push(0);
            }
            (schema, l)
        }
    };
    let schema = Arc::new(parquet::schema::parser::parse_message_type(&schema)?);
    let props = Arc::new(
        WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_created_by(format!("scalerl {}", env!("CARGO_PKG_VERSION")))
            .build(),
    );
    let mut buf = Vec::new();
    let mut writer = SerializedFileWriter::new(&mut buf, schema, props)?;
    let mut group = writer.next_row_group()?;
    let mut next = leaves.drain(..);
    while let Some(mut col) = group.next_column()? {
        let leaf = next.next().context("internal: fewer leaves than schema columns")?;
        if leaf.int {
            col.typed::<Int64Type>().write_batch(&leaf.ints, Some(&leaf.def), Some(&leaf.rep))?;
        } else {
            col.typed::<ByteArrayType>().write_batch(&leaf.strings, Some(&leaf.def), Some(&leaf.rep))?;
        }
        col.close()?;
    }
    group.close()?;
    writer.close()?;
    Ok(buf)
}
