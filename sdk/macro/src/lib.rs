//! The `#[http_component]` (WASIp2) and `#[http_service]` (WASIp3)
//! attributes of `berth-sdk`.
//!
//! Use them as `#[berth_sdk::http_component]` and
//! `#[berth_sdk::http_service]`: the expansions name items only through
//! `::berth_sdk`, so a component depends on `berth-sdk` alone. See
//! `berth_sdk::http_component` and `berth_sdk::http_service` for the
//! contract.

use proc_macro::TokenStream;
use proc_macro2::{Ident, Span, TokenStream as TokenStream2};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, parse_macro_input};

/// Turns `[async] fn NAME(request: Request) -> impl IntoResponse` into the
/// component's `wasi:http/incoming-handler` export.
#[proc_macro_attribute]
pub fn http_component(attr: TokenStream, item: TokenStream) -> TokenStream {
    attribute("http_component", attr, item, expand)
}

/// Turns `[async] fn NAME(request: berth_sdk::p3::Request) -> impl
/// berth_sdk::p3::IntoResponse` into the component's
/// `wasi:http/handler@0.3` export.
#[proc_macro_attribute]
pub fn http_service(attr: TokenStream, item: TokenStream) -> TokenStream {
    attribute("http_service", attr, item, expand_service)
}

/// An attribute without arguments on a function, expanded by `expand`.
fn attribute(
    name: &str,
    attr: TokenStream,
    item: TokenStream,
    expand: fn(ItemFn) -> syn::Result<TokenStream2>,
) -> TokenStream {
    if !attr.is_empty() {
        return syn::Error::new(
            TokenStream2::from(attr).span(),
            format!("#[{name}] takes no arguments"),
        )
        .to_compile_error()
        .into();
    }
    let handler = parse_macro_input!(item as ItemFn);
    expand(handler)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// The handler, renamed if it is `main` (a bin crate needs a `fn main`, and
/// `main` cannot be the possibly async handler itself), and how the
/// expansion calls it: an async handler as it is, a plain one through a
/// ready future.
fn prepare(handler: &mut ItemFn, request: &Ident) -> TokenStream2 {
    if handler.sig.ident == "main" {
        handler.sig.ident = format_ident!("__berth_http_component_main");
    }
    let name = &handler.sig.ident;
    // Spanned so that a wrong argument type is reported at the argument.
    let span = handler.sig.inputs.span();
    if handler.sig.asyncness.is_some() {
        quote_spanned!(span=> #name)
    } else {
        quote_spanned!(span=> |#request| ::core::future::ready(#name(#request)))
    }
}

/// The `fn main` a bin crate needs; dead code in a `cdylib`.
fn not_a_command() -> TokenStream2 {
    quote! {
        /// Satisfies rustc in a bin crate; dead code in a `cdylib`. A
        /// wasi:http host calls the handler export, never the `wasi:cli/run`
        /// export that this becomes in a bin.
        #[allow(dead_code, reason = "a cdylib never calls it")]
        fn main() {
            ::berth_sdk::__private::not_a_command()
        }
    }
}

fn expand_service(mut handler: ItemFn) -> syn::Result<TokenStream2> {
    check_signature(&handler, "http_service")?;
    let request = Ident::new("request", Span::mixed_site());
    let call = prepare(&mut handler, &request);
    let main = not_a_command();
    Ok(quote! {
        #handler

        const _: () = {
            struct __BerthHttpService;

            impl ::berth_sdk::p3::wasip3::exports::http::handler::Guest for __BerthHttpService {
                async fn handle(
                    #request: ::berth_sdk::p3::wasip3::http::types::Request,
                ) -> ::core::result::Result<
                    ::berth_sdk::p3::wasip3::http::types::Response,
                    ::berth_sdk::p3::wasip3::http::types::ErrorCode,
                > {
                    ::berth_sdk::p3::serve(#request, #call).await
                }
            }

            ::berth_sdk::p3::wasip3::http::service::export!(
                __BerthHttpService with_types_in ::berth_sdk::p3::wasip3
            );
        };

        #main
    })
}

fn expand(mut handler: ItemFn) -> syn::Result<TokenStream2> {
    check_signature(&handler, "http_component")?;

    // Locals of the expansion, invisible to (and unshadowed by) user code.
    // A handler named `main`, as `#[wstd::http_server]` wants it, is
    // renamed, so that code moves over unchanged.
    let incoming = Ident::new("incoming", Span::mixed_site());
    let response_out = Ident::new("response_out", Span::mixed_site());
    let request = Ident::new("request", Span::mixed_site());
    let call = prepare(&mut handler, &request);
    let main = not_a_command();

    Ok(quote! {
        #handler

        const _: () = {
            struct __BerthHttpComponent;

            impl ::berth_sdk::__private::wasip2::exports::http::incoming_handler::Guest
                for __BerthHttpComponent
            {
                fn handle(
                    #incoming: ::berth_sdk::__private::wasip2::http::types::IncomingRequest,
                    #response_out: ::berth_sdk::__private::wasip2::http::types::ResponseOutparam,
                ) {
                    ::berth_sdk::__private::serve(#incoming, #response_out, #call);
                }
            }

            ::berth_sdk::__private::wasip2::http::proxy::export!(
                __BerthHttpComponent with_types_in ::berth_sdk::__private::wasip2
            );
        };

        #main
    })
}

fn check_signature(handler: &ItemFn, attribute: &str) -> syn::Result<()> {
    let sig = &handler.sig;
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(syn::Error::new(
            sig.generics.span(),
            format!("an #[{attribute}] handler cannot be generic"),
        ));
    }
    if let Some(variadic) = &sig.variadic {
        return Err(syn::Error::new(variadic.span(), "unexpected variadic"));
    }
    let mut inputs = sig.inputs.iter();
    match (inputs.next(), inputs.next()) {
        (Some(FnArg::Typed(_)), None) => Ok(()),
        (Some(FnArg::Receiver(receiver)), _) => Err(syn::Error::new(
            receiver.span(),
            format!("an #[{attribute}] handler is a free function, not a method"),
        )),
        (Some(_), Some(extra)) => Err(syn::Error::new(
            extra.span(),
            format!("an #[{attribute}] handler takes exactly one argument, the request"),
        )),
        (None, _) => Err(syn::Error::new(
            sig.paren_token.span.join(),
            format!(
                "an #[{attribute}] handler takes the request as its argument: \
                 `fn handle(request: berth_sdk::{}Request)`",
                if attribute == "http_service" {
                    "p3::"
                } else {
                    ""
                }
            ),
        )),
    }
}
