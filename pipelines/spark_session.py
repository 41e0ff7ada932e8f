"""A Spark session whose Iceberg catalog ``ipsbench`` is the warehouse's own.

Spark's Iceberg ``JdbcCatalog`` opens the same catalog database as pyiceberg's
``SqlCatalog`` (``<warehouse>/catalog.db``, or the PostgreSQL database named by
``IPSBENCH_CATALOG_URI``: see :func:`pipelines.catalog.open_catalog`) under the same name, so each sees
the other's commits: tables made by datagen and state written by IPS are read
by Spark by name (``ipsbench.source.playback``, ``ipsbench.ips_icdc.<stage>``),
and Spark's ``MERGE INTO`` / ``INSERT OVERWRITE`` commits are read back by
pyiceberg.

Needs the optional dependency group ``.[spark]`` (pyspark 3.5 and the Iceberg
1.10.2 Spark runtime jar) and a JDBC driver jar for the catalog database: the
Debian package ``libxerial-sqlite-jdbc-java`` for sqlite (``make spark-deps``
installs both), ``libpostgresql-jdbc-java`` for PostgreSQL. pyspark is imported
inside :func:`spark_session`, so this module imports without it. See
``docs/spark.md`` for measured figures and pitfalls.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.catalog import CATALOG_NAME, open_catalog

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

ICEBERG_JAR = "iceberg-spark-runtime-3.5_2.12-1.10.2.jar"
ICEBERG_PACKAGE = "snowpark-connect-deps-iceberg==1.0.2"
SQLITE_JDBC_JAR = Path("/usr/share/java/sqlite-jdbc.jar")
SQLITE_JDBC_PACKAGE = "libxerial-sqlite-jdbc-java"
POSTGRES_JDBC_JAR = Path("/usr/share/java/postgresql.jar")
POSTGRES_JDBC_PACKAGE = "libpostgresql-jdbc-java"
DEFAULT_SHUFFLE_PARTITIONS = 4
# Settings fixed when the application starts (everything not under spark.sql. too).
STATIC_SQL_CONF = frozenset({"spark.sql.extensions"})

# Errors only, to stderr: without it the driver prints a native-hadoop warning
# and a "Setting default log level" banner on every start. The banner appears
# when the level of pyspark's gateway logger differs from the root's.
LOG4J2_PROPERTIES = """\
rootLogger.level = error
rootLogger.appenderRef.stderr.ref = console
logger.gateway.name = org.apache.spark.api.python.PythonGatewayServer
logger.gateway.level = error
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{yy/MM/dd HH:mm:ss} %p %c{1}: %m%n%ex
"""


class SparkUnavailable(RuntimeError):
    """Something Spark needs is not installed; the message names what to install."""


def iceberg_jar() -> Path:
    """The Iceberg Spark runtime jar shipped by ``snowpark-connect-deps-iceberg``."""
    try:
        import snowpark_connect_deps_iceberg as deps
    except ImportError:
        raise SparkUnavailable(
            f"the Iceberg Spark runtime jar is missing: pip install '{ICEBERG_PACKAGE}' (or '.[spark]')"
        ) from None
    try:
        return Path(deps.get_jar_path(ICEBERG_JAR))
    except (FileNotFoundError, RuntimeError):
        raise SparkUnavailable(
            f"{ICEBERG_JAR} is missing from snowpark-connect-deps-iceberg: pip install '{ICEBERG_PACKAGE}'"
        ) from None


def jdbc_driver_jar(jdbc_uri: str) -> Path:
    """The JDBC driver jar for the catalog database named by ``jdbc_uri``."""
    if jdbc_uri.startswith("jdbc:sqlite:"):
        jar, package = SQLITE_JDBC_JAR, SQLITE_JDBC_PACKAGE
    elif jdbc_uri.startswith("jdbc:postgresql:"):
        jar, package = POSTGRES_JDBC_JAR, POSTGRES_JDBC_PACKAGE
    else:
        raise SparkUnavailable(f"unsupported catalog JDBC URI {jdbc_uri!r}: expected jdbc:sqlite: or jdbc:postgresql:")
    if not jar.is_file():
        raise SparkUnavailable(f"JDBC driver {jar} is missing: apt-get install {package}")
    return jar


def jdbc_catalog(catalog_uri: str) -> tuple[str, dict[str, str]]:
    """The JDBC URI and connection properties of the database at SQLAlchemy URL ``catalog_uri``.

    Returns:
        ``(jdbc_uri, properties)``, e.g. ``("jdbc:postgresql://db:5432/ipsbench", {"user": "ipsbench"})``
        for ``postgresql+psycopg2://ipsbench@db/ipsbench``. Query parameters (``sslmode=require``)
        are passed on as properties: PostgreSQL's JDBC driver reads the same names as libpq.
    """
    from sqlalchemy.engine import make_url

    url = make_url(catalog_uri)
    backend = url.get_backend_name()
    if backend == "sqlite":
        return f"jdbc:sqlite:{url.database}", {}
    if backend != "postgresql":
        raise SparkUnavailable(f"unsupported catalog database {backend!r} for Spark: expected sqlite or postgresql")
    properties = {key: value for key, value in url.query.items() if isinstance(value, str)}
    if url.username is not None:
        properties["user"] = url.username
    if url.password is not None:
        properties["password"] = str(url.password)
    return f"jdbc:postgresql://{url.host or 'localhost'}:{url.port or 5432}/{url.database}", properties


def log4j2_config() -> Path:
    """A quiet log4j2 configuration file for the driver (written to the temp directory)."""
    path = Path(tempfile.gettempdir()) / "ipsbench-spark-log4j2.properties"
    if not path.is_file() or path.read_text() != LOG4J2_PROPERTIES:
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(LOG4J2_PROPERTIES)
        tmp.replace(path)
    return path


def spark_conf(
    warehouse: Path,
    master: str = "local[*]",
    app: str = "ipsbench",
    jdbc_uri: str | None = None,
    shuffle_partitions: int = DEFAULT_SHUFFLE_PARTITIONS,
    driver_memory: str = "1g",
) -> dict[str, str]:
    """The Spark configuration :func:`spark_session` starts with (checks the jars exist).

    Without ``jdbc_uri``, Spark's catalog is the database :func:`open_catalog` opens for
    ``warehouse`` (which raises ``CatalogMissing`` when there is none).
    """
    warehouse = warehouse.resolve()
    properties: dict[str, str] = {}
    if jdbc_uri is None:
        # Ask open_catalog rather than read IPSBENCH_CATALOG_URI here: the two engines
        # then cannot disagree on which database holds the catalog.
        catalog = open_catalog(warehouse)
        try:
            jdbc_uri, properties = jdbc_catalog(catalog.engine.url.render_as_string(hide_password=False))
        finally:
            catalog.engine.dispose()
    uri = jdbc_uri
    driver = jdbc_driver_jar(uri)
    # spark.jars is fixed when the application starts, and later sessions of it may open
    # the other kind of catalog database: every driver present goes on the class path.
    others = [jar for jar in (SQLITE_JDBC_JAR, POSTGRES_JDBC_JAR) if jar != driver and jar.is_file()]
    jars = [iceberg_jar(), driver, *others]
    cat = f"spark.sql.catalog.{CATALOG_NAME}"
    conf = {
        "spark.master": master,
        "spark.app.name": app,
        # Given to the driver's class path and shipped to every executor.
        "spark.jars": ",".join(str(j) for j in jars),
        "spark.driver.memory": driver_memory,
        "spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile={log4j2_config().as_uri()}",
        "spark.sql.shuffle.partitions": str(shuffle_partitions),
        "spark.default.parallelism": str(shuffle_partitions),
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.extensions": "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions",
        cat: "org.apache.iceberg.spark.SparkCatalog",
        f"{cat}.catalog-impl": "org.apache.iceberg.jdbc.JdbcCatalog",
        f"{cat}.uri": uri,
        # The warehouse URI pyiceberg's SqlCatalog uses: new tables land in the same place.
        f"{cat}.warehouse": f"file://{warehouse}",
        # Another engine (pyiceberg) commits to these tables: load them afresh on every
        # query; Iceberg's cached tables miss those commits (stale reads, failed writes).
        f"{cat}.cache-enabled": "false",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        **{f"{cat}.jdbc.{key}": value for key, value in properties.items()},
    }
    if uri.startswith("jdbc:sqlite:"):
        # Iceberg's JdbcCatalog checks for its tables with DatabaseMetaData.getTables()
        # and never closes the result set: on sqlite that holds a read lock for the
        # life of the JVM, and every pyiceberg commit then fails with "database is
        # locked". pyiceberg creates the tables (``open_catalog(create=True)``).
        conf[f"{cat}.jdbc.init-catalog-tables"] = "false"
    return conf


def spark_session(
    warehouse: Path,
    master: str = "local[*]",
    app: str = "ipsbench",
    jdbc_uri: str | None = None,
    jdbc_properties: Mapping[str, str] | None = None,
    shuffle_partitions: int = DEFAULT_SHUFFLE_PARTITIONS,
    driver_memory: str = "1g",
    extra_conf: Mapping[str, str] | None = None,
) -> SparkSession:
    """Start (or reuse) a Spark session with the warehouse's Iceberg catalog ``ipsbench``.

    ``warehouse`` is the directory holding ``catalog.db`` and the tables.
    ``master`` is ``local[*]`` or a cluster URL such as ``spark://host:7077``;
    a cluster's executors must reach the warehouse's files at the same paths.
    The catalog database is the one pyiceberg opens (:func:`open_catalog`: the
    warehouse's sqlite file, or ``IPSBENCH_CATALOG_URI``). ``jdbc_uri`` names another JDBC database, e.g.
    ``jdbc:postgresql://host:5432/ipsbench`` (driver: ``libpostgresql-jdbc-java``),
    with ``jdbc_properties`` such as ``{"user": ..., "password": ...}`` passed to
    the catalog as ``jdbc.<key>``; pyiceberg must then use the same database
    (``SqlCatalog(uri="postgresql+psycopg2://...")``). ``extra_conf`` is applied
    last and overrides anything set here.

    One Spark application runs per process. When a session is already active,
    its master must be ``master`` (else ``ValueError``) and its jars, driver
    memory and SQL extensions stay as they were; for another catalog (another
    warehouse or ``jdbc_uri``) a new session of that application is returned,
    with the catalog's settings applied to it: an Iceberg catalog, once loaded,
    keeps the database it first opened. Raises ``SparkUnavailable`` naming the
    package to install when pyspark or a jar is missing, ``CatalogMissing``
    when ``warehouse`` has no catalog (and no ``jdbc_uri`` is given).
    """
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise SparkUnavailable("pyspark is missing: pip install '.[spark]' (pyspark==3.5.9)") from None
    conf = spark_conf(warehouse, master, app, jdbc_uri, shuffle_partitions, driver_memory)
    for key, value in (jdbc_properties or {}).items():
        conf[f"spark.sql.catalog.{CATALOG_NAME}.jdbc.{key}"] = value
    conf.update(extra_conf or {})
    active = SparkSession.getActiveSession()
    if active is None:
        builder = SparkSession.builder
        for key, value in conf.items():
            builder = builder.config(key, value)
        spark = builder.getOrCreate()
        spark.sparkContext.setLogLevel("ERROR")
        return spark
    running = active.sparkContext.master
    if running != conf["spark.master"]:
        raise ValueError(f"a Spark session on {running} is already running in this process; stop it first")
    uri_key = f"spark.sql.catalog.{CATALOG_NAME}.uri"
    spark = active if active.conf.get(uri_key, None) == conf[uri_key] else active.newSession()
    for key, value in conf.items():
        if key.startswith("spark.sql.") and key not in STATIC_SQL_CONF:
            spark.conf.set(key, value)
    return spark
