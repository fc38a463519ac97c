# Sourced by .ci/run: a PostgreSQL server for tests/test_postgres*.py.
#
# Installs Debian's PostgreSQL when absent (as root), starts its cluster, creates
# the role and database `cds_test`, and exports CDS_TEST_POSTGRES_URL. Nothing
# here fails the run: when a step fails, that variable stays unset, the reason is
# printed and exported as CDS_TEST_POSTGRES_UNAVAILABLE, and the PostgreSQL tests
# skip, saying why.

_pg_unavailable() {
  export CDS_TEST_POSTGRES_UNAVAILABLE="$*"
  echo "PostgreSQL not available ($*): the PostgreSQL tests will be skipped" >&2
  return 1
}

_pg_start() {
  local version port status
  if [ -n "${CDS_TEST_POSTGRES_URL:-}" ]; then
    echo "PostgreSQL tests use the given CDS_TEST_POSTGRES_URL" >&2
    return 0
  fi
  if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    [ "$(id -u)" -eq 0 ] || { _pg_unavailable "not installed, and not root to install it"; return 1; }
    echo "Installing PostgreSQL (apt-get)..." >&2
    { timeout 300 apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq postgresql; } >/dev/null 2>&1 ||
      { _pg_unavailable "apt-get install postgresql failed"; return 1; }
  fi
  command -v pg_lsclusters >/dev/null || { _pg_unavailable "pg_lsclusters missing"; return 1; }
  version=$(ls /usr/lib/postgresql | sort -n | tail -1)
  _pg_cluster() { pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" {print $3, $4}'; }
  if [ -z "$(_pg_cluster)" ]; then
    pg_createcluster "$version" main >/dev/null 2>&1 ||
      { _pg_unavailable "pg_createcluster $version main failed"; return 1; }
  fi
  read -r port status <<<"$(_pg_cluster)"
  if [ "$status" != online ]; then
    pg_ctlcluster "$version" main start >/dev/null 2>&1 ||
      { _pg_unavailable "pg_ctlcluster $version main start failed"; return 1; }
  fi
  timeout 60 bash -c "until pg_isready -q -h 127.0.0.1 -p $port; do sleep 1; done" ||
    { _pg_unavailable "server on port $port not ready after 60 s"; return 1; }
  runuser -u postgres -- psql -q -p "$port" -v ON_ERROR_STOP=1 >/dev/null 2>&1 <<'SQL' ||
SELECT 'CREATE ROLE cds_test LOGIN PASSWORD ''cds_test'''
  WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'cds_test')\gexec
SELECT 'CREATE DATABASE cds_test OWNER cds_test'
  WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'cds_test')\gexec
SQL
    { _pg_unavailable "creating role and database cds_test failed"; return 1; }
  export CDS_TEST_POSTGRES_URL="postgresql+psycopg://cds_test:cds_test@127.0.0.1:$port/cds_test"
  echo "PostgreSQL $version on port $port: CDS_TEST_POSTGRES_URL is set" >&2
}

_pg_start || true
