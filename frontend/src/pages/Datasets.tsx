// /datasets: every dataset (the world's and registered ones), an upload form, a dataset's samples.
import { useState } from "react";
import { errorMessage } from "../api/client";
import { datasetsApi } from "../features/datasets/api";
import { DatasetSamples } from "../features/datasets/DatasetSamples";
import { DatasetTable } from "../features/datasets/DatasetTable";
import { UploadForm } from "../features/datasets/UploadForm";
import { ErrorBox, Panel, Spinner } from "../ui/components";
import { useDocumentTitle, usePolling } from "../ui/hooks";

export function Datasets() {
  useDocumentTitle("Datasets");
  const list = usePolling(datasetsApi.datasets, (_d, e) => (e ? 5000 : 30000));
  const [selected, setSelected] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const datasets = list.data?.datasets ?? [];
  const shown = selected ?? datasets[0]?.id ?? null;

  const remove = async (id: string) => {
    setError(null);
    try {
      await datasetsApi.remove(id);
      if (selected === id) setSelected(null);
      list.refresh();
    } catch (err) {
      setError(errorMessage(err));
    }
  };

  return (
    <div className="page" data-testid="datasets-page">
      <header className="page-head">
        <h1>Datasets</h1>
        <p className="lede">Text an analysis runs on: the world&apos;s own corpus and files you add. Each is tokenized per model when an SAE is trained on it.</p>
      </header>
      <UploadForm
        onAdded={(id) => {
          setSelected(id);
          list.refresh();
        }}
      />
      {error && <ErrorBox title="Cannot delete" message={error} />}
      <Panel title="All datasets">
        {!list.data && list.error ? (
          <ErrorBox title="Could not list datasets" message={errorMessage(list.error)} />
        ) : !list.data ? (
          <Spinner label="Loading datasets" />
        ) : (
          <DatasetTable datasets={datasets} selected={shown} onSelect={setSelected} onDelete={(id) => void remove(id)} />
        )}
      </Panel>
      {shown && <DatasetSamples key={shown} id={shown} />}
    </div>
  );
}
