# Loupe in a container: the frontend built with Node, the app on Python 3.11 with CPU torch.
FROM node:20-bookworm-slim AS frontend
WORKDIR /src/frontend
COPY frontend/package.json frontend/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY frontend/ ./
RUN npm run build

FROM python:3.11-slim-bookworm
WORKDIR /app
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
# CPU torch from PyTorch's CPU index (a plain `torch` would pull the CUDA build);
# kronfluence without its declared torchvision, which breaks transformers beside this torch.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
COPY pyproject.toml README.md ./
COPY backend/ backend/
# the cluster extra (Ray, with its client) too: the same image runs the app and the ray profile's head and workers
RUN pip install '.[cluster]' && pip install --no-deps kronfluence==1.0.1
COPY --from=frontend /src/frontend/dist /app/frontend/dist
ENV LOUPE_WORKSPACE=/workspace LOUPE_FRONTEND_DIST=/app/frontend/dist LOUPE_HOST=0.0.0.0
VOLUME /workspace
EXPOSE 8000
CMD ["loupe", "run"]
