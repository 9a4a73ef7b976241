//! What the server tells clients about itself (GetSqlInfo) and the SQL types it offers (GetXdbcTypeInfo): static
//! tables, built once per service.

use arrow_flight::sql::metadata::{
    SqlInfoData, SqlInfoDataBuilder, XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::{
    Nullable, Searchable, SqlInfo, SqlNullOrdering, SqlSupportedCaseSensitivity,
    SqlSupportedTransaction, XdbcDataType, XdbcDatetimeSubcode,
};

pub(super) fn sql_info() -> SqlInfoData {
    let mut b = SqlInfoDataBuilder::new();
    b.append(SqlInfo::FlightSqlServerName, "marrow");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    b.append(SqlInfo::FlightSqlServerArrowVersion, "58");
    b.append(SqlInfo::FlightSqlServerReadOnly, false);
    b.append(SqlInfo::FlightSqlServerSql, true);
    b.append(SqlInfo::FlightSqlServerSubstrait, false);
    b.append(
        SqlInfo::FlightSqlServerTransaction,
        SqlSupportedTransaction::None as i32,
    );
    b.append(SqlInfo::FlightSqlServerCancel, false);
    b.append(SqlInfo::FlightSqlServerBulkIngestion, true);
    b.append(SqlInfo::FlightSqlServerIngestTransactionsSupported, false);
    b.append(SqlInfo::FlightSqlServerStatementTimeout, 0i32);
    b.append(SqlInfo::FlightSqlServerTransactionTimeout, 0i32);
    b.append(SqlInfo::SqlDdlCatalog, false);
    b.append(SqlInfo::SqlDdlSchema, false);
    b.append(SqlInfo::SqlDdlTable, true);
    b.append(
        SqlInfo::SqlIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityLowercase as i32,
    );
    b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    b.append(SqlInfo::SqlAllTablesAreSelectable, true);
    b.append(
        SqlInfo::SqlNullOrdering,
        SqlNullOrdering::SqlNullsSortedHigh as i32,
    );
    b.append(SqlInfo::SqlSearchStringEscape, "\\");
    b.append(SqlInfo::SqlSupportsColumnAliasing, true);
    b.append(SqlInfo::SqlNullPlusNullIsNull, true);
    b.append(SqlInfo::SqlSupportsTableCorrelationNames, true);
    b.append(SqlInfo::SqlSupportsExpressionsInOrderBy, true);
    b.append(SqlInfo::SqlSupportsLikeEscapeClause, true);
    b.append(SqlInfo::SqlSupportsNonNullableColumns, true);
    b.append(SqlInfo::SqlSchemaTerm, "schema");
    b.append(SqlInfo::SqlCatalogTerm, "catalog");
    b.append(SqlInfo::SqlCatalogAtStart, true);
    b.append(SqlInfo::SqlSelectForUpdateSupported, false);
    b.append(SqlInfo::SqlStoredProceduresSupported, false);
    b.append(SqlInfo::SqlCorrelatedSubqueriesSupported, true);
    b.append(SqlInfo::SqlTransactionsSupported, false);
    b.append(SqlInfo::SqlBatchUpdatesSupported, true);
    b.append(SqlInfo::SqlSavepointsSupported, false);
    b.append(SqlInfo::SqlNamedParametersSupported, false);
    b.build().expect("static SQL info builds")
}

pub(super) fn xdbc_type_info() -> XdbcTypeInfoData {
    fn ty(
        name: &str,
        data_type: XdbcDataType,
        column_size: Option<i32>,
        quoted: bool,
        radix: Option<i32>,
    ) -> XdbcTypeInfo {
        XdbcTypeInfo {
            type_name: name.to_string(),
            data_type,
            column_size,
            literal_prefix: quoted.then(|| "'".to_string()),
            literal_suffix: quoted.then(|| "'".to_string()),
            create_params: None,
            nullable: Nullable::NullabilityNullable,
            case_sensitive: quoted,
            searchable: Searchable::Full,
            unsigned_attribute: radix.map(|_| false),
            fixed_prec_scale: false,
            auto_increment: Some(false),
            local_type_name: Some(name.to_string()),
            minimum_scale: None,
            maximum_scale: None,
            sql_data_type: data_type,
            datetime_subcode: None,
            num_prec_radix: radix,
            interval_precision: None,
        }
    }
    let mut b = XdbcTypeInfoDataBuilder::new();
    b.append(ty("BOOLEAN", XdbcDataType::XdbcBit, Some(1), false, None));
    b.append(ty(
        "TINYINT",
        XdbcDataType::XdbcTinyint,
        Some(3),
        false,
        Some(10),
    ));
    b.append(ty(
        "SMALLINT",
        XdbcDataType::XdbcSmallint,
        Some(5),
        false,
        Some(10),
    ));
    b.append(ty(
        "INTEGER",
        XdbcDataType::XdbcInteger,
        Some(10),
        false,
        Some(10),
    ));
    b.append(ty(
        "BIGINT",
        XdbcDataType::XdbcBigint,
        Some(19),
        false,
        Some(10),
    ));
    b.append(ty("REAL", XdbcDataType::XdbcReal, Some(24), false, Some(2)));
    b.append(ty(
        "DOUBLE",
        XdbcDataType::XdbcDouble,
        Some(53),
        false,
        Some(2),
    ));
    let mut decimal = ty(
        "DECIMAL",
        XdbcDataType::XdbcDecimal,
        Some(38),
        false,
        Some(10),
    );
    decimal.create_params = Some(vec!["precision".into(), "scale".into()]);
    decimal.minimum_scale = Some(0);
    decimal.maximum_scale = Some(38);
    decimal.fixed_prec_scale = true;
    b.append(decimal);
    b.append(ty("VARCHAR", XdbcDataType::XdbcVarchar, None, true, None));
    b.append(ty("BYTEA", XdbcDataType::XdbcVarbinary, None, true, None));
    let mut date = ty("DATE", XdbcDataType::XdbcDate, Some(10), true, None);
    date.sql_data_type = XdbcDataType::XdbcDatetime;
    // SQL_CODE_DATE is 1, which Flight SQL names XDBC_SUBCODE_YEAR.
    date.datetime_subcode = Some(XdbcDatetimeSubcode::XdbcSubcodeYear);
    b.append(date);
    let mut ts = ty(
        "TIMESTAMP",
        XdbcDataType::XdbcTimestamp,
        Some(26),
        true,
        None,
    );
    ts.sql_data_type = XdbcDataType::XdbcDatetime;
    ts.datetime_subcode = Some(XdbcDatetimeSubcode::XdbcSubcodeTimestamp);
    b.append(ts);
    b.build().expect("static type info builds")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_metadata_builds() {
        let info = sql_info();
        let batch = info
            .record_batch([SqlInfo::FlightSqlServerName as u32])
            .unwrap();
        assert_eq!(batch.num_rows(), 1);
        let types = xdbc_type_info();
        assert!(types.record_batch(None).unwrap().num_rows() >= 10);
    }
}
