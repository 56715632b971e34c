"""Series names a PromQL expression reads, and the series the monitored stack exports.

`series_names(expr)` is deliberately simple (no full PromQL parser): it drops
string literals, label matchers, grouping clauses and range selectors, and keeps
identifiers that are not functions, keywords or durations. Good enough for the
expressions of our rules and dashboards, which tests/unit/test_alert_rules.py
and test_dashboards.py check against EXPORTED and the recording rules' names.
"""

import pathlib
import re

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
RULES_DIR = ROOT / "roles" / "prometheus" / "files" / "rules"

KEYWORDS = {
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "bool",
    "inf",
    "nan",
}

# Series of the exporters this collection deploys or scrapes, by source; each
# name checked against the exporter's source at the Debian 12 version (see the
# prometheus role's README, "Series").
EXPORTED = {
    # Prometheus itself, for every job.
    "prometheus": {"up", "scrape_duration_seconds", "scrape_samples_scraped", "ALERTS", "ALERTS_FOR_STATE"},
    # Patroni 3.0.2 (patroni/api.py, do_GET_metrics).
    "patroni": {
        "patroni_version",
        "patroni_postgres_running",
        "patroni_postmaster_start_time",
        "patroni_master",
        "patroni_primary",
        "patroni_xlog_location",
        "patroni_standby_leader",
        "patroni_replica",
        "patroni_sync_standby",
        "patroni_xlog_received_location",
        "patroni_xlog_replayed_location",
        "patroni_xlog_replayed_timestamp",
        "patroni_xlog_paused",
        "patroni_postgres_server_version",
        "patroni_cluster_unlocked",
        "patroni_failsafe_mode_is_active",
        "patroni_postgres_timeline",
        "patroni_dcs_last_seen",
        "patroni_pending_restart",
        "patroni_is_paused",
    },
    # postgres_exporter 0.11.1 (built-in maps) and our queries.yml (rtmx_pg_*).
    "postgres_exporter": {
        "pg_up",
        "pg_stat_replication_pg_wal_lsn_diff",
        "pg_stat_replication_pg_current_wal_lsn_bytes",
        "pg_stat_database_numbackends",
        "pg_stat_database_xact_commit",
        "pg_stat_database_xact_rollback",
        "pg_stat_database_deadlocks",
        "pg_database_size_bytes",
        "pg_settings_max_connections",
        "rtmx_pg_replication_replay_lag_seconds",
        "rtmx_pg_replication_replay_lag_bytes",
        "rtmx_pg_recovery_is_replica",
        "pg_stat_archiver_archived_count",
        "pg_stat_archiver_failed_count",
        "pg_stat_archiver_last_archive_age",
        "rtmx_pg_archiver_ready_segments",
        "rtmx_pg_archiver_oldest_ready_age_seconds",
        "rtmx_pg_archiver_last_attempt_failed",
    },
    # etcd 3.4.
    "etcd": {
        "etcd_server_has_leader",
        "etcd_server_leader_changes_seen_total",
        "etcd_server_proposals_failed_total",
        "etcd_mvcc_db_total_size_in_bytes",
        "etcd_network_peer_round_trip_time_seconds_bucket",
        "etcd_disk_wal_fsync_duration_seconds_bucket",
    },
    # redis_exporter 1.45 (exporter/exporter.go, sentinels.go), namespace redis.
    "redis_exporter": {
        "redis_up",
        "redis_instance_info",
        "redis_connected_slaves",
        "redis_connected_clients",
        "redis_memory_used_bytes",
        "redis_memory_max_bytes",
        "redis_master_link_up",
        "redis_commands_processed_total",
        "redis_master_repl_offset",
        "redis_slave_repl_offset",
        "redis_sentinel_master_status",
        "redis_sentinel_master_slaves",
        "redis_sentinel_master_sentinels",
        "redis_sentinel_master_ok_sentinels",
        "redis_sentinel_master_ok_slaves",
        "redis_sentinel_master_ckquorum_status",
        "redis_sentinel_masters",
        "redis_sentinel_tilt",
    },
    # roles/pgbouncer_exporter/files/rtmx_pgbouncer_exporter.py.
    "pgbouncer_exporter": {
        "pgbouncer_up",
        "pgbouncer_pools_client_active_connections",
        "pgbouncer_pools_client_waiting_connections",
        "pgbouncer_pools_server_active_connections",
        "pgbouncer_pools_server_idle_connections",
        "pgbouncer_pools_server_used_connections",
        "pgbouncer_pools_server_testing_connections",
        "pgbouncer_pools_server_login_connections",
        "pgbouncer_pools_client_maxwait_seconds",
        "pgbouncer_databases_pool_size",
        "pgbouncer_databases_reserve_pool",
        "pgbouncer_databases_max_connections",
        "pgbouncer_databases_current_connections",
        "pgbouncer_stats_queries_pooled_total",
        "pgbouncer_stats_sql_transactions_pooled_total",
        "pgbouncer_stats_received_bytes_total",
        "pgbouncer_stats_sent_bytes_total",
        "pgbouncer_stats_sql_transactions_duration_seconds_total",
        "pgbouncer_stats_queries_duration_seconds_total",
        "pgbouncer_stats_client_wait_seconds_total",
        "pgbouncer_config_max_client_connections",
        "pgbouncer_config_default_pool_size",
    },
    # HAProxy 2.6 built-in exporter (src/../promex).
    "haproxy": {
        "haproxy_frontend_http_requests_total",
        "haproxy_frontend_http_responses_total",
        "haproxy_frontend_current_sessions",
        "haproxy_frontend_bytes_in_total",
        "haproxy_frontend_bytes_out_total",
        "haproxy_backend_http_requests_total",
        "haproxy_backend_http_responses_total",
        "haproxy_backend_connection_errors_total",
        "haproxy_backend_connection_attempts_total",
        "haproxy_backend_total_time_average_seconds",
        "haproxy_backend_response_time_average_seconds",
        "haproxy_backend_active_servers",
        "haproxy_backend_current_sessions",
        "haproxy_server_status",
        "haproxy_server_current_sessions",
        "haproxy_process_current_connections",
    },
    # node_exporter 1.5, with the systemd and textfile collectors (rtmx_vip_held from the node_exporter role).
    "node_exporter": {
        "node_load1",
        "node_cpu_seconds_total",
        "node_memory_MemAvailable_bytes",
        "node_memory_MemTotal_bytes",
        "node_filesystem_avail_bytes",
        "node_filesystem_size_bytes",
        "node_systemd_unit_state",
        "rtmx_vip_held",
        # rtmx.ha.pgbackrest's and rtmx.ha.etcd_snapshot's figures (roles/pgbackrest/files/rtmx_pgbackrest_metrics.py,
        # roles/etcd_snapshot/templates/etcd-snapshot.sh.j2) on the backup host.
        "rtmx_pgbackrest_info_success",
        "rtmx_pgbackrest_info_timestamp_seconds",
        "rtmx_pgbackrest_backup_max_age_seconds",
        "rtmx_pgbackrest_stanza_status",
        "rtmx_pgbackrest_backup_in_progress",
        "rtmx_pgbackrest_backups",
        "rtmx_pgbackrest_backup_last_completion_timestamp_seconds",
        "rtmx_pgbackrest_backup_last_duration_seconds",
        "rtmx_pgbackrest_backup_last_database_size_bytes",
        "rtmx_pgbackrest_backup_last_repository_size_bytes",
        "rtmx_etcd_snapshot_last_success_timestamp_seconds",
        "rtmx_etcd_snapshots",
        # Every host's certificate expiry timer (roles/node_exporter/files/rtmx_certificate_expiry.py).
        "rtmx_tls_certificate_not_after_timestamp_seconds",
        "rtmx_tls_certificate_read_success",
    },
    # blackbox_exporter 0.23.
    "blackbox_exporter": {"probe_success", "probe_duration_seconds", "probe_http_status_code"},
    # The sync servers (sync_server/src/rtmx_sync/metrics.py): counters end in _total,
    # histograms in _bucket/_sum/_count.
    "sync_server": {
        "rtmx_sync_connections",
        "rtmx_sync_rooms",
        "rtmx_sync_pending_writes",
        "rtmx_sync_write_buffer_max",
        "rtmx_sync_event_loop_lag_seconds",
        "rtmx_sync_draining",
        "rtmx_sync_websocket_connections_total",
        "rtmx_sync_messages_total",
        "rtmx_sync_updates_in_total",
        "rtmx_sync_updates_out_total",
        "rtmx_sync_remote_updates_total",
        "rtmx_sync_refused_total",
        "rtmx_sync_errors_total",
        "rtmx_sync_redis_published_total",
        "rtmx_sync_redis_publish_dropped_total",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
    }
    | {
        "rtmx_sync_%s_%s" % (name, part)
        for name in (
            "update_apply_seconds",
            "update_store_seconds",
            "store_latency_seconds",
            "write_batch_size",
            "cross_server_latency_seconds",
        )
        for part in ("bucket", "sum", "count")
    },
}
EXPORTED_NAMES = set().union(*EXPORTED.values())


def load_rules():
    """Every rule of the collection's rule files: [(file name, rule dict)]."""
    rules = []
    for path in sorted(RULES_DIR.glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules.extend((path.name, rule) for rule in group["rules"])
    return rules


def recorded_names():
    return {rule["record"] for _, rule in load_rules() if "record" in rule}


def series_names(expr):
    """Names of the series an expression selects."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        token = match.group(0)
        following = text[match.end() :].lstrip()
        if token.lower() in KEYWORDS or following.startswith("("):
            continue
        if re.fullmatch(r"\d+[smhdwy]", token) or (match.start() > 0 and text[match.start() - 1].isdigit()):
            continue
        names.add(token)
    return names
