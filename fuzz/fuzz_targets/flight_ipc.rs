#![no_main]
libfuzzer_sys::fuzz_target!(
    init: marrow_fuzz::tolerate_caught_decoder_panics(),
    |data: &[u8]| marrow_fuzz::flight_ipc(data)
);
