"""The Zarr v3 survey store (DESIGN §5): the data contract between tasks, runs and users.

Layout (schema version 1)::

    <store>/                      attrs["lenspipe"] = {schema_version, created, software},
                                  attrs["last_run"] = the last run's summary
      lenspipe.lock               the run lock (JSON, not a Zarr node)
      runs/<run_id>/              attrs["summary"]
      datasets/<name>/            attrs: status, pixel_scales, origin, shape_native, n_pixels,
                                  psf_shape, sources, settings, settings_hash, software, timings, error
        data, noise_map           float64 (ny, nx), masked = 0
        mask                      bool (ny, nx), True = masked
        psf                       float64 (ky, kx), as used (normalised)
        over_sample_size_lp       int32 (ny, nx), 0 at masked pixels; same for _pixelization
        grid                      float64 (N, 2) arcsec (y, x)
        noise_covariance_matrix   float64 (N, N), only if the dataset has one
        sparse_operator/          attrs: batch_size, n_batches, kernel_shape, dtype, storage
          values                  float64|float32 (N, n_offsets), chunks (batch_size, n_offsets),
                                  codecs: the chosen compressor, then a crc32c checksum
          offsets                 int32 (n_offsets, 2)
          batches_done            uint8 (n_batches,), chunks (1,): the completion marker of each
                                  batch, written after that batch's values

The package is the only code of lenspipe that names a store node or touches Zarr. Its modules:

===============  ===================================================================================
``schema``       schema version, node names, :class:`DatasetStatus`, safe dataset names (no Zarr)
``codecs``       dtypes, compressors and checksums (:class:`OperatorStorage`)
``_zarr``        Zarr plumbing: the only module touching Zarr internals
``location``     creating and opening stores; locations where a store could destroy other files
``sources``      input files: hashes, changes (:class:`Source`)
``attributes``   a dataset's attributes, typed and read-only (:class:`DatasetRecord`; no Zarr)
``nodes``        a dataset's group and operator arrays in an open store
``writers``      task writes: a dataset's arrays, operator batches
``records``      driver writes: groups, statuses, failures, run records; :func:`write_imaging`
``catalog``      what a store holds: statuses, attributes (raw or as records), problems, last run
``readers``      :func:`open_imaging`, :func:`open_operator`, :func:`read_dataset_arrays`
``integrity``    damaged operator batches, verify and reset
``check``        whole-dataset checks (:func:`check_dataset`)
``recipe``       what a worker opens, cached per process (:class:`StoreRecipe`)
``lock``         the run lock: one driver per store
``removal``      removing datasets under the run lock (:func:`remove_datasets`, ``lenspipe rm``)
===============  ===================================================================================

Concurrency contract: only the driver creates the store and dataset groups and writes status
attributes; a dataset's prepare task fills that dataset's own group; an operator task only
writes whole chunks of arrays that exist, then its marker. A chunk's presence never proves
completion: the markers do; every array is checksummed, so damage is found, never read as data.
See docs/store-schema.md.
"""

from pipeline.io.store._zarr import StoreLike
from pipeline.io.store.attributes import DatasetRecord
from pipeline.io.store.catalog import (
    dataset_attrs,
    dataset_problems,
    dataset_record,
    dataset_records,
    dataset_status,
    last_run,
    list_datasets,
    scan_datasets,
    store_metadata,
    survey_attrs,
    survey_records,
)
from pipeline.io.store.check import DatasetCheck, check_dataset
from pipeline.io.store.codecs import OperatorStorage
from pipeline.io.store.integrity import damaged_batches, reset_batches, verify_dataset
from pipeline.io.store.location import create_store, open_store, store_exists, store_overlaps
from pipeline.io.store.lock import (
    LOCK_NAME,
    SETTLE_SECONDS,
    RunLock,
    acquire_run_lock,
    settle_seconds,
)
from pipeline.io.store.nodes import batches_done, operator_batch_count
from pipeline.io.store.readers import open_imaging, open_operator, read_dataset_arrays
from pipeline.io.store.recipe import (
    OperatorBatchInputs,
    StoreRecipe,
    cached_root,
    configure_zarr_for_tasks,
    operator_batch_inputs,
)
from pipeline.io.store.records import (
    begin_dataset,
    finalize_dataset,
    mark_failed,
    prepare_dataset,
    record_prepared,
    record_run_summary,
    reopen_dataset,
    write_imaging,
)
from pipeline.io.store.removal import remove_datasets, select_datasets
from pipeline.io.store.schema import (
    COMPLETE,
    DAMAGED,
    FAILED,
    PREPARED,
    PREPARING,
    RESERVED_NAMES,
    SCHEMA_VERSION,
    DatasetStatus,
    settings_hash,
    validate_dataset_name,
)
from pipeline.io.store.sources import Source, file_sha256, not_a_regular_file, source_changed
from pipeline.io.store.writers import (
    dataset_metadata,
    prepared_attributes,
    write_dataset_arrays,
    write_operator_batch,
)

__all__ = [
    "COMPLETE",
    "DAMAGED",
    "FAILED",
    "LOCK_NAME",
    "PREPARED",
    "PREPARING",
    "RESERVED_NAMES",
    "SCHEMA_VERSION",
    "SETTLE_SECONDS",
    "DatasetCheck",
    "DatasetRecord",
    "DatasetStatus",
    "OperatorBatchInputs",
    "OperatorStorage",
    "RunLock",
    "Source",
    "StoreLike",
    "StoreRecipe",
    "acquire_run_lock",
    "batches_done",
    "begin_dataset",
    "cached_root",
    "configure_zarr_for_tasks",
    "check_dataset",
    "create_store",
    "damaged_batches",
    "dataset_attrs",
    "dataset_metadata",
    "dataset_problems",
    "dataset_record",
    "dataset_records",
    "dataset_status",
    "file_sha256",
    "finalize_dataset",
    "last_run",
    "list_datasets",
    "mark_failed",
    "not_a_regular_file",
    "open_imaging",
    "read_dataset_arrays",
    "open_operator",
    "open_store",
    "operator_batch_count",
    "operator_batch_inputs",
    "prepare_dataset",
    "prepared_attributes",
    "record_prepared",
    "record_run_summary",
    "remove_datasets",
    "reopen_dataset",
    "reset_batches",
    "scan_datasets",
    "select_datasets",
    "settings_hash",
    "settle_seconds",
    "source_changed",
    "store_exists",
    "store_metadata",
    "store_overlaps",
    "survey_attrs",
    "survey_records",
    "validate_dataset_name",
    "verify_dataset",
    "write_dataset_arrays",
    "write_imaging",
    "write_operator_batch",
]
