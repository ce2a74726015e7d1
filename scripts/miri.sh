#!/usr/bin/env bash
# Runs under Miri the library's unit tests that it can interpret: they check the unsafe code
# over plain memory for undefined behaviour (out-of-bounds or misaligned accesses, invalid
# values such as a bool byte other than 0 or 1, use after free, data races):
# - dtype: `Element::copy_from_shared` for every dtype (misaligned source, uninitialized
#   destination, 0/1/5 elements, bool normalisation), `as_bytes`;
# - seqlock (and header's atomic views) over an anonymous mapping;
# - history: the ring's slot arithmetic, appends (copy and fill in place) and slot reads
#   over an anonymous mapping, lapping it (not the streaming stores: inline assembly);
# - format, notify's wait strategies, and the tests of other modules that need no shm.
# The rest shm_open/mmap a file, flock, fork, spawn or call getrlimit, which Miri cannot
# run; error's access_denied test fails under Miri only for its strerror text (Miri's
# message already ends in "(os error 13)", which std appends again).
# Not run by CI: it needs the nightly toolchain with the miri and rust-src components
# (`rustup +nightly component add miri rust-src`). Builds into target-miri/ so it never
# touches the stable build. Took 7 minutes here from a cold target-miri (2 busy cores),
# 52 tests in about 1.5 minutes once built.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target-miri}"
# Isolation off: the notify and backoff tests read the monotonic clock.
export MIRIFLAGS="${MIRIFLAGS:--Zmiri-disable-isolation}"
filters=(
    dtype::
    seqlock::
    format::
    backoff::
    spin::
    deadline::
    slowdown::
    catalog::tests::a_reopened_meta_is_the_stream_when_valid_and_cleared_only_when_valid_but_for_stamps
    catalog::tests::a_scan_decodes_a_bad_meta_again_only_if_it_may_settle
    catalog::tests::a_stored_name_collides_only_when_it_is_another_name_with_the_same_id
    catalog::tests::an_unlistable_shm_is_an_error_about_no_stream
    catalog::tests::only_what_a_writer_or_creator_in_progress_leaves_may_settle
    create::tests::stream_bytes_counts_whole_pages_per_segment
    error::tests::a_file_size_limit_under_the_metadata_segment_offers_no_smaller_stream
    error::tests::a_full_dev_shm_is_no_space_naming_the_stream_the_room_and_the_remedy
    error::tests::a_timeout_names_the_process_it_waited_for
    error::tests::a_timeout_names_the_stream_and_the_remedy
    error::tests::a_v2_header_says_which_pyshmem_reads_it_and_to_recreate_it
    error::tests::an_aborted_write_says_what_its_closure_said
    error::tests::an_unfinished_stream_is_not_found_saying_to_wait_or_remove_it
    error::tests::no_space_tells_inodes_from_bytes
    error::tests::not_found_names_the_stream_and_lists_others
    history::tests::appends_lap_a_ring_over_a_mapping_and_read_back_from_their_slots
    history::tests::ring_sizes_are_bounded_and_aligned
    name::tests::a_name_in_a_command_is_one_shell_word
    name::tests::a_remedy_gives_a_command_only_for_a_name_shown_as_it_is
    name::tests::bad_names_are_refused
    name::tests::control_characters_in_a_line_are_escaped_and_other_text_is_not
    name::tests::look_alikes_are_not_segment_ids
    name::tests::paths_are_made_absolute_as_python_does
    name::tests::segment_id_is_pyshmem_sha1_prefix
    notify::tests::an_adaptive_wait_spins_for_its_time_then_stops_spinning
    notify::tests::each_strategy_spins_yields_parks_or_sleeps_in_its_order
    notify::tests::spins_and_yields_look_for_a_dead_writer_rarely_and_parks_and_sleeps_without_a_wake
    stream::tests::giving_back_a_report_leaves_one_made_meanwhile
    stream::not_found::tests::the_hint_names_a_pyshmem_stream_caught_mid_crc
)
# Without the cuda feature: the gpu module's unsafe code is CUDA driver calls.
exec cargo +nightly miri test -p shmstream --no-default-features --lib -- "${filters[@]}" "$@"
