//! The pages that read the catalog (until it lands).

use axum::response::Response;

use super::session::Visitor;
use super::PageError;
use crate::error::AppError;

pub async fn home(_visitor: Visitor) -> Result<Response, PageError> {
    Err(AppError::NotFound("soon".into()).into())
}
pub async fn search(_visitor: Visitor) -> Result<Response, PageError> {
    Err(AppError::NotFound("soon".into()).into())
}
pub async fn owner(_visitor: Visitor) -> Result<Response, PageError> {
    Err(AppError::NotFound("soon".into()).into())
}
pub async fn setup(_visitor: Visitor) -> Result<Response, PageError> {
    Err(AppError::NotFound("soon".into()).into())
}
pub async fn package(_visitor: Visitor) -> Result<Response, PageError> {
    Err(AppError::NotFound("soon".into()).into())
}
pub async fn index_status(_visitor: Visitor) -> Result<Response, PageError> {
    Err(AppError::NotFound("soon".into()).into())
}
