BEGIN;

CREATE TABLE alembic_version (
    version_num VARCHAR(32) NOT NULL,
    CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);

-- Running upgrade  -> 1a2b3c4d5e6f

CREATE TABLE account (
    id SERIAL NOT NULL,
    name VARCHAR(50) NOT NULL,
    PRIMARY KEY (id)
);

INSERT INTO alembic_version (version_num) VALUES ('1a2b3c4d5e6f') RETURNING alembic_version.version_num;

-- Running upgrade 1a2b3c4d5e6f -> 2b3c4d5e6f70

ALTER TABLE account ADD COLUMN last_login TIMESTAMP WITHOUT TIME ZONE;

UPDATE alembic_version SET version_num='2b3c4d5e6f70' WHERE alembic_version.version_num = '1a2b3c4d5e6f';

COMMIT;
