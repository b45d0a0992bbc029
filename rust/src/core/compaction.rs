//! A lake table's small Parquet files rewritten as one. Files of the shipper's own making whose
//! row groups are large enough are joined as they are, their encoded columns copied byte for
//! byte; others are read a slice at a time and written again with the shipper's writer settings,
//! their small row groups becoming large ones. Either way a rewrite holds a slice and a row group
//! in memory, however many rows its files have.

use std::cell::Cell;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use parquet::column::writer::ColumnCloseResult;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;

use super::columns::{self, CREATED_BY, SLICE_ROWS};
use super::error::{CoreError, Result};
use super::lake_table::Table;

/// What a rewrite wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewritten {
    pub rows: u64,
    pub bytes: u64,
}

type Batches = Box<dyn Iterator<Item = Result<RecordBatch>>>;

fn unreadable(path: &Path, err: impl std::fmt::Display) -> CoreError {
    CoreError::LakeFile(format!("cannot read {}: {err}", path.display()))
}

/// An input file's footer, read once to decide how to rewrite it. The file itself is opened
/// again when its rows are read: a rewrite of a busy day takes thousands of small files, more
/// than a process may hold open at once.
struct Input {
    path: PathBuf,
    metadata: Arc<ParquetMetaData>,
}

impl Input {
    fn read(path: &Path) -> Result<Self> {
        Ok(Self {
            path: path.to_path_buf(),
            metadata: Arc::new(footer(path, &open_input(path)?, PageIndexPolicy::Skip)?),
        })
    }
}

fn open_input(path: &Path) -> Result<File> {
    File::open(path).map_err(|err| unreadable(path, err))
}

/// A file's footer; its page index is wanted only when its columns are copied as they are.
fn footer(path: &Path, file: &File, page_index: PageIndexPolicy) -> Result<ParquetMetaData> {
    ParquetMetaDataReader::new()
        .with_page_index_policy(page_index)
        .parse_and_finish(file)
        .map_err(|err| unreadable(path, err))
}

fn batches_of(input: Input, schema: &SchemaRef) -> Result<Batches> {
    let Input { path, metadata } = input;
    // The table's own Arrow types, whichever ones the file's writer recorded (pyiceberg writes
    // large strings, and may spell UTC otherwise).
    let options = ArrowReaderOptions::new().with_schema(Arc::clone(schema));
    let metadata = ArrowReaderMetadata::try_new(metadata, options).map_err(|err| unreadable(&path, err))?;
    let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(open_input(&path)?, metadata)
        .with_batch_size(SLICE_ROWS)
        .build()
        .map_err(|err| unreadable(&path, err))?;
    Ok(Box::new(
        reader.map(move |batch| batch.map_err(|err| unreadable(&path, err))),
    ))
}

/// Row groups of at least this many rows on average are copied as they are: written again
/// together, smaller ones become fewer and larger ones, which readers go through faster.
pub(crate) const COPIED_ROW_GROUP_ROWS: i64 = 8_192;

/// Write the rows of `inputs`, in order, to one new file at `output` (created under a temporary
/// name and renamed once synced; on an error nothing is left there). The inputs are left alone:
/// the lake's commit that replaces them decides when they go.
pub fn rewrite(table: Table, inputs: &[PathBuf], output: &Path) -> Result<Rewritten> {
    let opened = inputs
        .iter()
        .map(PathBuf::as_path)
        .map(Input::read)
        .collect::<Result<Vec<_>>>()?;
    if joinable(&opened) {
        return join(&opened, output);
    }
    let shared: SchemaRef = Arc::new(table.schema());
    let rows = Cell::new(0u64);
    let batches = opened
        .into_iter()
        .flat_map(|input| batches_of(input, &shared).unwrap_or_else(|err| Box::new(std::iter::once(Err(err)))))
        .inspect(|batch| {
            if let Ok(batch) = batch {
                rows.set(rows.get() + batch.num_rows() as u64);
            }
        });
    let bytes = columns::write_parquet(output, table, batches)?;
    Ok(Rewritten {
        rows: rows.get(),
        bytes,
    })
}

/// Whether the inputs can be joined as they are: all of the shipper's making, with one schema,
/// and row groups large enough on average.
fn joinable(inputs: &[Input]) -> bool {
    let Some(first) = inputs.first() else {
        return false;
    };
    let first = first.metadata.file_metadata();
    let alike = inputs.iter().all(|input| {
        let file = input.metadata.file_metadata();
        file.created_by() == Some(CREATED_BY)
            && file.schema() == first.schema()
            && file.key_value_metadata() == first.key_value_metadata()
    });
    let rows: i64 = inputs
        .iter()
        .map(|input| input.metadata.file_metadata().num_rows())
        .sum();
    let groups: usize = inputs.iter().map(|input| input.metadata.num_row_groups()).sum();
    alike && rows >= COPIED_ROW_GROUP_ROWS * i64::try_from(groups).unwrap_or(i64::MAX)
}

/// One file of every row group of `inputs`, in order, their encoded columns copied.
fn join(inputs: &[Input], output: &Path) -> Result<Rewritten> {
    let encoding =
        |err: parquet::errors::ParquetError| CoreError::LakeFile(format!("cannot write {}: {err}", output.display()));
    let mut rows = 0u64;
    let bytes = columns::write_file(output, |file| {
        let first = inputs[0].metadata.file_metadata();
        let properties = WriterProperties::builder()
            .set_created_by(CREATED_BY.into())
            .set_key_value_metadata(first.key_value_metadata().cloned())
            .build();
        let schema = first.schema_descr().root_schema_ptr();
        let mut writer = SerializedFileWriter::new(file, schema, Arc::new(properties)).map_err(encoding)?;
        for Input { path, .. } in inputs {
            let source = open_input(path)?;
            let metadata = footer(path, &source, PageIndexPolicy::Optional)?;
            let page_index = metadata.page_index();
            for (group_index, group) in metadata.row_groups().iter().enumerate() {
                let mut copied = writer.next_row_group().map_err(encoding)?;
                for (column_index, column) in group.columns().iter().enumerate() {
                    let close = ColumnCloseResult {
                        bytes_written: column.compressed_size() as u64,
                        rows_written: group.num_rows() as u64,
                        metadata: column.clone(),
                        bloom_filter: None,
                        column_index: page_index
                            .and_then(|index| index.column_index(group_index, column_index))
                            .cloned(),
                        offset_index: page_index
                            .and_then(|index| index.offset_index(group_index, column_index))
                            .cloned(),
                    };
                    copied.append_column(&source, close).map_err(encoding)?;
                }
                copied.close().map_err(encoding)?;
                rows += group.num_rows() as u64;
            }
        }
        writer.into_inner().map_err(encoding)
    })?;
    Ok(Rewritten { rows, bytes })
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
        let ours = Table::Events.schema();
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

    fn ours(path: &Path, batch: RecordBatch) {
        columns::write_parquet(path, Table::Events, std::iter::once(Ok(batch))).unwrap();
    }

    fn row_groups(path: &Path) -> Vec<i64> {
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap();
        reader
            .metadata()
            .row_groups()
            .iter()
            .map(parquet::file::metadata::RowGroupMetaData::num_rows)
            .collect()
    }

    #[test]
    fn the_shippers_large_row_groups_are_copied_and_small_ones_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let schema = Table::Events.schema();
        let large = COPIED_ROW_GROUP_ROWS as usize;
        let inputs = [
            dir.path().join("a.parquet"),
            dir.path().join("b.parquet"),
            dir.path().join("c.parquet"),
        ];
        ours(&inputs[0], events(0, large, &schema));
        ours(&inputs[1], events(large, large + 1, &schema));
        ours(&inputs[2], events(2 * large + 1, 10, &schema));
        let expected = |rows: usize| -> Vec<String> { (0..rows).map(|n| format!("uuid-{n}")).collect() };

        // Large enough on average: joined as they are, each row group kept.
        let joined = dir.path().join("joined.parquet");
        let rewritten = rewrite(Table::Events, &inputs[..2], &joined).unwrap();
        assert_eq!(rewritten.rows, 2 * large as u64 + 1);
        assert_eq!(rewritten.bytes, std::fs::metadata(&joined).unwrap().len());
        assert_eq!(row_groups(&joined), vec![large as i64, large as i64 + 1]);
        // Their page indexes came along, for readers that skip pages.
        let copied = footer(&joined, &File::open(&joined).unwrap(), PageIndexPolicy::Skip).unwrap();
        assert!(copied
            .row_groups()
            .iter()
            .flat_map(parquet::file::metadata::RowGroupMetaData::columns)
            .all(|column| column.offset_index_range().is_some()));
        assert_eq!(column(&read(&joined), "uuid"), expected(2 * large + 1));

        // With a small file among them, or one the shipper did not write: written again, as
        // one row group.
        let other = dir.path().join("other.parquet");
        write(&other, &events(2 * large + 1, 10, &schema));
        for last in [&inputs[2], &other] {
            let again = dir.path().join("again.parquet");
            let files = [inputs[0].clone(), inputs[1].clone(), last.clone()];
            rewrite(Table::Events, &files, &again).unwrap();
            assert_eq!(row_groups(&again), vec![2 * large as i64 + 11]);
            assert_eq!(column(&read(&again), "uuid"), expected(2 * large + 11));
        }
    }

    #[test]
    fn an_unreadable_input_leaves_no_output() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.parquet");
        write(&good, &events(0, 10, &Table::Events.schema()));
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
