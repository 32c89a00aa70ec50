"""A berth app in Python, built by componentize-py 0.25.1 for WASIp3.

The world is `wasi:http/service@0.3.0`, read from berth's `wit/p3`:

    cd examples/python-hello
    componentize-py -d ../../wit/p3 -w wasi:http/service@0.3.0 \
        componentize app -o target/python-hello.wasm
    cd ../.. && ./target/release/berth serve --config examples/python-hello/berth.toml
    curl http://python-hello.localhost:8080/some/path
    curl --data-binary 'hi' http://python-hello.localhost:8080/echo

GET answers with a greeting naming the method and path; POST /echo streams
the request body back as it arrives.
"""

import componentize_py_async_support
import wit_world
from componentize_py_async_support.streams import ByteStreamWriter
from componentize_py_types import Ok
from wit_world import exports
from wit_world.imports.wasi_http_types import Fields, Method_Post, Request, Response


class Handler(exports.Handler):
    async def handle(self, request: Request) -> Response:
        path = request.get_path_with_query() or "/"
        if isinstance(request.get_method(), Method_Post) and path == "/echo":
            body, trailers = Request.consume_body(request, body_done())
            return Response.new(Fields(), body, trailers)[0]
        method = type(request.get_method()).__name__.removeprefix("Method_").upper()
        text = f"hello from componentize-py: {method} {path}\n"
        tx, rx = wit_world.byte_stream()
        componentize_py_async_support.spawn(write_all(tx, text.encode()))
        headers = Fields.from_list([("content-type", b"text/plain")])
        return Response.new(headers, rx, no_trailers())[0]


async def write_all(tx: ByteStreamWriter, data: bytes) -> None:
    with tx:
        await tx.write_all(data)


def no_trailers():
    """A trailers future that resolves to "no trailers"."""
    make = wit_world.result_option_wasi_http_types_fields_wasi_http_types_error_code_future
    return make(lambda: Ok(None))[1]


def body_done():
    """The future `consume-body` reports the end of the request body on."""
    return wit_world.result_unit_wasi_http_types_error_code_future(lambda: Ok(None))[1]
