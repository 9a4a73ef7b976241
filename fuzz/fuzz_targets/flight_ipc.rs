#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| marrow_fuzz::flight_ipc(data));
