//! A lake table's small Parquet files rewritten as one, a slice at a time, with the writer
//! settings of the shipper's own files: a rewrite holds a slice and a row group in memory,
//! however many rows its files have.

use std::cell::Cell;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};

use super::columns::{self, EVENT_PERSON_COLUMNS, PERSON_COLUMNS, SLICE_ROWS};
use super::error::{CoreError, Result};
use super::export::Table;

/// What a rewrite wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewritten {
    pub rows: u64,
    pub bytes: u64,
}

type Batches = Box<dyn Iterator<Item = Result<RecordBatch>>>;

fn batches_of(path: &Path, schema: &SchemaRef) -> Result<Batches> {
    let shown = path.display().to_string();
    let unreadable = move |err: &dyn std::fmt::Display| CoreError::Encoding(format!("cannot read {shown}: {err}"));
    let file = File::open(path).map_err(|err| CoreError::Store(format!("cannot read {}: {err}", path.display())))?;
    // The table's own Arrow types, whichever ones the file's writer recorded (pyiceberg writes
    // large strings, and may spell UTC otherwise).
    let options = ArrowReaderOptions::new().with_schema(Arc::clone(schema));
    let reader = ParquetRecordBatchReaderBuilder::try_new_with_options(file, options)
        .map_err(|err| unreadable(&err))?
        .with_batch_size(SLICE_ROWS)
        .build()
        .map_err(|err| unreadable(&err))?;
    Ok(Box::new(reader.map(move |batch| batch.map_err(|err| unreadable(&err)))))
}

/// Write the rows of `inputs`, in order, to one new file at `output` (created under a temporary
/// name and renamed once synced; on an error nothing is left there). The inputs are left alone:
/// the lake's commit that replaces them decides when they go.
pub fn rewrite(table: Table, inputs: &[PathBuf], output: &Path) -> Result<Rewritten> {
    let (schema, with_dictionary) = match table {
        Table::Events => (columns::event_schema(), &EVENT_PERSON_COLUMNS[..]),
        Table::Persons => (columns::person_schema(), &PERSON_COLUMNS[..]),
    };
    let shared: SchemaRef = Arc::new(schema.clone());
    let rows = Cell::new(0u64);
    let batches = inputs
        .iter()
        .flat_map(|path| batches_of(path, &shared).unwrap_or_else(|err| Box::new(std::iter::once(Err(err)))))
        .inspect(|batch| {
            if let Ok(batch) = batch {
                rows.set(rows.get() + batch.num_rows() as u64);
            }
        });
    let bytes = columns::write_parquet(output, schema, with_dictionary, batches)?;
    Ok(Rewritten {
        rows: rows.get(),
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use arrow_array::{Array, ArrayRef, LargeStringArray, StringArray, TimestampMicrosecondArray};
    use arrow_schema::{DataType, Field, Schema, TimeUnit};
    use parquet::arrow::ArrowWriter;

    use super::*;

    /// Event rows with only the required columns filled, written as `schema` says.
    fn events(first: usize, count: usize, schema: &Schema) -> RecordBatch {
        let columns = schema
            .fields()
            .iter()
            .map(|field| -> ArrayRef {
                let values = (first..first + count).map(|n| format!("{}-{n}", field.name()));
                match (field.name().as_str(), field.data_type()) {
                    ("uuid" | "source" | "event" | "distinct_id", DataType::Utf8) => {
                        Arc::new(values.map(Some).collect::<StringArray>())
                    }
                    ("uuid" | "source" | "event" | "distinct_id", DataType::LargeUtf8) => {
                        Arc::new(values.map(Some).collect::<LargeStringArray>())
                    }
                    ("created_at", DataType::Timestamp(_, zone)) => Arc::new(
                        TimestampMicrosecondArray::from_iter_values((first..first + count).map(|n| n as i64))
                            .with_timezone_opt(zone.clone()),
                    ),
                    (_, kind) => arrow_array::new_null_array(kind, count),
                }
            })
            .collect();
        RecordBatch::try_new(Arc::new(schema.clone()), columns).unwrap()
    }

    fn write(path: &Path, batch: &RecordBatch) {
        let mut writer = ArrowWriter::try_new(File::create(path).unwrap(), batch.schema(), None).unwrap();
        writer.write(batch).unwrap();
        writer.close().unwrap();
    }

    fn read(path: &Path) -> Vec<RecordBatch> {
        ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap())
            .unwrap()
            .build()
            .unwrap()
            .map(|batch| batch.unwrap())
            .collect()
    }

    fn column(batches: &[RecordBatch], name: &str) -> Vec<String> {
        let mut values = Vec::new();
        for batch in batches {
            let strings = batch.column_by_name(name).unwrap();
            let strings = strings.as_any().downcast_ref::<StringArray>().unwrap();
            values.extend(strings.iter().map(|value| value.unwrap().to_owned()));
        }
        values
    }

    #[test]
    fn rows_of_every_file_in_order_and_in_the_tables_types() {
        let dir = tempfile::tempdir().unwrap();
        let ours = columns::event_schema();
        // A file pyiceberg wrote: large strings, UTC spelled as an offset.
        let theirs = Schema::new(
            ours.fields()
                .iter()
                .map(|field| match field.data_type() {
                    DataType::Utf8 => Field::new(field.name(), DataType::LargeUtf8, field.is_nullable()),
                    DataType::Timestamp(unit, _) => Field::new(
                        field.name(),
                        DataType::Timestamp(*unit, Some("+00:00".into())),
                        field.is_nullable(),
                    ),
                    _ => field.as_ref().clone(),
                })
                .collect::<Vec<_>>(),
        );
        let inputs = [
            dir.path().join("a.parquet"),
            dir.path().join("b.parquet"),
            dir.path().join("c.parquet"),
        ];
        write(&inputs[0], &events(0, 3_000, &ours));
        write(&inputs[1], &events(3_000, 5, &theirs));
        write(&inputs[2], &events(3_005, 1, &ours));

        let output = dir.path().join("day").join("out.parquet");
        let rewritten = rewrite(Table::Events, &inputs, &output).unwrap();

        assert_eq!(rewritten.rows, 3_006);
        assert_eq!(rewritten.bytes, std::fs::metadata(&output).unwrap().len());
        let batches = read(&output);
        let uuids = column(&batches, "uuid");
        let expected: Vec<String> = (0..3_006).map(|n| format!("uuid-{n}")).collect();
        assert_eq!(uuids, expected);
        let created = batches[0].column_by_name("created_at").unwrap();
        assert_eq!(
            created.data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );
        assert!(batches
            .iter()
            .all(|batch| batch.column_by_name("properties").unwrap().null_count() == batch.num_rows()));
        assert!(!dir.path().join("day").join("out.parquet.tmp").exists());
    }

    #[test]
    fn an_unreadable_input_leaves_no_output() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.parquet");
        write(&good, &events(0, 10, &columns::event_schema()));
        let broken = dir.path().join("broken.parquet");
        std::fs::write(&broken, b"not parquet").unwrap();
        let missing = dir.path().join("missing.parquet");
        let output = dir.path().join("out.parquet");

        for inputs in [vec![good.clone(), broken], vec![good, missing]] {
            let err = rewrite(Table::Events, &inputs, &output).unwrap_err();
            assert!(err.to_string().contains("cannot read"), "{err}");
            assert!(!output.exists());
            assert!(!output.with_extension("parquet.tmp").exists());
        }
    }
}
