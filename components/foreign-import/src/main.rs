//! A WASIp3 handler that also imports `spin:variables/variables@3.0.0`, an
//! interface of Spin's that berth does not provide, as a Spin app reading a
//! variable does. berth must refuse it at deploy naming that import.

wasip3::wit_bindgen::generate!({
    inline: "
        package spin:variables@3.0.0;

        interface variables {
            get: func(name: string) -> result<string, string>;
        }

        world foreign {
            import variables;
        }
    ",
    runtime_path: "wasip3::wit_bindgen::rt",
});

use wasip3::http::types::{ErrorCode, Fields, Request, Response};
use wasip3::wit_future;

wasip3::http::service::export!(Foreign);

struct Foreign;

impl wasip3::exports::http::handler::Guest for Foreign {
    async fn handle(_request: Request) -> Result<Response, ErrorCode> {
        // Never runs on berth: the import keeps the component from linking.
        let _ = spin::variables::variables::get("greeting");
        let (_, trailers) = wit_future::new(|| Ok(None));
        let (response, _sent) = Response::new(Fields::new(), None, trailers);
        Ok(response)
    }
}

fn main() {}
