//! Model weights and LoRA adapters as tables. Formats (safetensors, GGUF, PEFT) are parsed and written here;
//! the rows live in `tensors`, `models` and `adapters`, reached only through SQL sent back through a session (models
//! are SQL clients, like the Python layer). Pure compute (dtype conversion, the LoRA kernel) is in
//! `marrow_udfs::tensor`.

pub mod adapters;
pub mod gguf;
pub mod peft;
pub mod safetensors;
pub mod weights;

pub use safetensors::model_files;
