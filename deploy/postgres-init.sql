-- Run once by the postgres image on an empty data directory (docker-compose.yml):
-- the owner runs migrations, the app role serves requests and workers (README "Database roles").
CREATE ROLE marketplace_owner LOGIN PASSWORD 'marketplace-owner' NOSUPERUSER NOCREATEROLE;
CREATE ROLE marketplace_app   LOGIN PASSWORD 'marketplace-app'   NOSUPERUSER NOCREATEROLE NOCREATEDB;
CREATE DATABASE marketplace OWNER marketplace_owner;
